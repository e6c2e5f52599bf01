"""Human output: tables and the run timeline. Every string that comes from the server is shown
through ``clean``: a branch name, a commit message or a stage name set by a webhook sender must not
move the cursor, retitle the terminal or hide lines with escape sequences."""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")

FINAL = {"SUCCESS", "FAILURE", "CANCELLED", "TIMED_OUT", "SKIPPED"}
FAILED = {"FAILURE", "CANCELLED", "TIMED_OUT"}


def clean(value: object, width: int = 0) -> str:
    """One line of printable text: control characters (escape sequences, bidi overrides, line
    breaks) become '?'; cut to ``width`` characters with '…' when given."""
    text = "-" if value is None else str(value)
    text = _CONTROL.sub("?", text)
    if width and len(text) > width:
        text = text[: max(width - 1, 0)] + "…"
    return text


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], max_width: int = 48) -> str:
    cells = [[clean(c, max_width) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(seconds: object) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def short_commit(commit: object) -> str:
    if isinstance(commit, dict) and isinstance(commit.get("hash"), str):
        return commit["hash"][:10]
    return "-"


def run_rows(runs: Iterable[dict]) -> str:
    return table(
        ["RUN", "STATUS", "BRANCH", "COMMIT", "ACTOR", "CREATED", "DURATION"],
        [[r.get("id"), r.get("status"), r.get("branch"), short_commit(r.get("commit")), r.get("actor"),
          r.get("createdAt"), duration(r.get("duration"))] for r in runs])


def stage_rows(stages: Iterable[dict]) -> str:
    stages = [s for s in stages if isinstance(s, dict)]
    text = table(
        ["STAGE", "ID", "TYPE", "STATUS", "ATTEMPT", "STARTED", "DURATION"],
        [[s.get("name"), s.get("id"), s.get("type"), s.get("status"), s.get("attempt"), s.get("startedAt"),
          duration(s.get("duration"))] for s in stages])
    notes = [f"{clean(s.get('name'), 24)}: {note}" for s in stages
             for note in (retry_note(s), overrun_note(s), bounds_note(s)) if note]
    return text + "".join(f"{line}\n" for line in notes)


def overrun_note(stage: dict) -> str:
    """A running stage past its recent p95: "overrunning since <when> (typically <p50>)"."""
    if stage.get("status") != "IN_PROGRESS" or not stage.get("overrunningAt"):
        return ""
    typical = stage.get("typicalSeconds")
    usual = f" (typically {duration(typical)})" if isinstance(typical, int | float) else ""
    return f"overrunning since {clean(stage.get('overrunningAt'))}{usual}"


def bounds_note(stage: dict) -> str:
    """A finally stage says so; an active one says what ends it early: a stop's grace end
    (``cancelsAt``) and the run's deadline (``runDeadline``). Empty when none applies."""
    parts = ["finally stage (runs after a failure, stop or cancel too)"] if stage.get("always") else []
    if stage.get("cancelsAt"):
        parts.append(f"cancelled at {clean(stage.get('cancelsAt'))} unless it ends (stop)")
    if stage.get("runDeadline"):
        parts.append(f"run deadline {clean(stage.get('runDeadline'))}")
    return "; ".join(parts)


def retry_note(stage: dict) -> str:
    """A stage's automatic retries: "retry 1 of 2 at <when> after FAILURE" while one is pending,
    "1 of 2 automatic retries" once some were used; empty otherwise."""
    policy = stage.get("retry")
    if not isinstance(policy, dict):
        return ""
    used, most = stage.get("autoRetries"), policy.get("max")
    if stage.get("nextRetryAt"):
        return (f"retry {clean(used)} of {clean(most)} at {clean(stage.get('nextRetryAt'))} "
                f"after {clean(stage.get('retryReason'))}")
    return f"{clean(used)} of {clean(most)} automatic retries" if used else ""


def approvals(stage: dict) -> str:
    """A gate with an approval policy: "1 of 2 approvals (alice)" and each decision on its own
    line (who, when, comment); empty for a stage without one."""
    policy = stage.get("approvalPolicy")
    if not isinstance(policy, dict):
        return ""
    decisions = [d for d in stage.get("approvals") or [] if isinstance(d, dict)]
    approved = [clean(d.get("by")) for d in decisions if d.get("decision") == "APPROVED"]
    lines = [f"{len(approved)} of {clean(policy.get('required'))} approvals"
             + (f" ({', '.join(approved)})" if approved else "")]
    for d in decisions:
        comment = f": {clean(d.get('comment'), 80)}" if d.get("comment") else ""
        lines.append(f"  {clean(d.get('decision')).lower()} by {clean(d.get('by'))} at {clean(d.get('at'))}"
                     f"{comment}")
    if stage.get("status") == "WAITING_FOR_APPROVAL":
        lines.append(f"  may decide: {approvers(policy)}")
    return "\n".join(lines) + "\n"


def approvers(policy: dict) -> str:
    """Who may decide a policy gate: its approvers, each group with its members, and whether the
    run's creator is excluded ("any operate token" when the policy lists nobody)."""
    given = policy.get("groups")
    groups: dict = given if isinstance(given, dict) else {}
    named = []
    for entry in policy.get("approvers") or []:
        grouped = isinstance(entry, str) and entry.startswith("group:")
        members = groups.get(entry[len("group:"):]) if grouped else None
        named.append(clean(entry) + (f" ({', '.join(clean(m) for m in members)})" if isinstance(members, list)
                                     else ""))
    text = ", ".join(named) or "any operate token"
    return text + ("; not the run's creator" if policy.get("preventSelfApproval") else "")


def pipeline_status(status: dict) -> str:
    """`pipelines concurrency`: pause state, concurrency mode and group, and who holds the lock."""
    given = status.get("concurrency")
    setting: dict = given if isinstance(given, dict) else {}
    group = setting.get("group") or status.get("name")
    lines = [f"pipeline {clean(status.get('name'))}  " + ("paused" if status.get("paused") else "not paused")
             + (f" ({clean(status.get('pausedCause'), 80)})" if status.get("pausedCause") else ""),
             f"  concurrency {clean(setting.get('mode'))}"
             + ("" if setting.get("mode") == "PARALLEL" else f"  group {clean(group)}"),
             f"  locked by {clean(status.get('lockedBy'))}" if status.get("locked") else "  not locked",
             f"  schedulable {'yes' if status.get('schedulable') else 'no'}"]
    return "\n".join(lines) + "\n"


def decided_stage(stage: dict) -> str:
    """What ``approve`` / ``reject`` print: the stage, and where its gate stands."""
    text = stage_rows([stage])
    progress = approvals(stage)
    return text + ("\n" + progress if progress else "")


def run_header(run: dict) -> str:
    commit = run.get("commit") if isinstance(run.get("commit"), dict) else {}
    lines = [f"run {clean(run.get('id'))}  {clean(run.get('status'))}  {duration(run.get('duration'))}",
             f"  pipeline {clean(run.get('pipeline'))}  branch {clean(run.get('branch'))}  "
             f"actor {clean(run.get('actor'))}  source {clean(run.get('source'))}"
             + (f"  environment {clean(run.get('environment'))}" if run.get("environment") else "")]
    if commit:
        lines.append(f"  commit {clean(commit.get('hash'), 40)}  {clean(commit.get('message'), 60)}")
    if run.get("sourceUrl"):
        lines.append(f"  {clean(run.get('sourceUrl'), 200)}")
    if run.get("eta"):
        lines.append(f"  eta {clean(run.get('eta'))}  (from its stages' recent p50)")
    if run.get("concurrencyGroup"):
        waits = "  (waits for the run holding it)" if run.get("status") == "QUEUED" else ""
        queue = run.get("queue")
        if run.get("status") == "QUEUED" and isinstance(queue, dict):
            waits = (f"  (waits: {clean(queue.get('position'))} of {clean(queue.get('waiting'))} in line, "
                     f"behind {clean(queue.get('holder'))})")
        lines.append(f"  concurrency group {clean(run.get('concurrencyGroup'))}{waits}")
    cancellation = run.get("cancellation")
    if isinstance(cancellation, dict):
        forced = "force-" if cancellation.get("force") is True else ""
        lines.append(f"  {forced}cancelled by {clean(cancellation.get('by'))}: "
                     f"{clean(cancellation.get('reason'), 80)}")
    stopping = run.get("stopping")
    if isinstance(stopping, dict) and stopping.get("graceUntil") and run.get("status") == "CANCELLING":
        lines.append(f"  stopping: running stages may finish until {clean(stopping.get('graceUntil'))}")
    return "\n".join(lines) + "\n"


def run_details(run: dict) -> str:
    text = run_header(run) + "\n" + stage_rows(run.get("stages") or [])
    for stage in run.get("stages") or []:  # where each policy gate still waiting stands
        if isinstance(stage, dict) and stage.get("status") == "WAITING_FOR_APPROVAL" and approvals(stage):
            text += f"{clean(stage.get('name'), 24)}: {approvals(stage)}"
    variables = run.get("variables")
    if isinstance(variables, dict) and variables:
        text += "\n" + table(["VARIABLE", "VALUE"], sorted(variables.items()), max_width=60)
    return text


BAR_WIDTH = 40


def _span(origin: datetime | None, item: dict) -> tuple[float, float] | None:
    """(start, end) in seconds from the run's start; a running stage ends at start + live duration."""
    start = parse_time(item.get("startedAt"))
    if origin is None or start is None:
        return None
    seconds = item.get("duration")
    offset = (start - origin).total_seconds()
    return offset, offset + (float(seconds) if isinstance(seconds, int | float) else 0.0)


def timeline(run: dict, unicode: bool = True) -> str:
    """The run's stages as bars on one time axis, from the run's start to the latest end (a
    running stage's bar grows with its live duration; its timeout deadline is marked when it falls
    on the axis). A stage's ended attempts, when the run was read with ``?include=attempts``, are
    lighter bars on its row."""
    full, part, old, tick = ("█", "▌", "░", "┆") if unicode else ("#", ">", "-", ":")
    stages = [s for s in run.get("stages") or [] if isinstance(s, dict)]
    origin = parse_time(run.get("startedAt"))
    current = [_span(origin, s) for s in stages]
    earlier = [[span for a in s.get("attempts") or [] if isinstance(a, dict) and (span := _span(origin, a))]
               for s in stages]
    horizon = max([end for span in current if span for end in span[1:]]
                  + [span[1] for spans in earlier for span in spans] + [1.0])
    names = [clean(s.get("name"), 24) for s in stages]
    name_width = max([len(n) for n in names] + [5])
    lines = [run_header(run).rstrip("\n"), "",
             f"{'STAGE'.ljust(name_width)}  {'STATUS'.ljust(20)}  {'TIME'.rjust(7)}  "
             f" 0s{' ' * (BAR_WIDTH - 2 - len(duration(horizon)))}{duration(horizon)}"]

    def columns(span: tuple[float, float]) -> range:
        first = min(int(span[0] / horizon * BAR_WIDTH), BAR_WIDTH - 1)
        return range(first, max(first + 1, min(round(span[1] / horizon * BAR_WIDTH), BAR_WIDTH)))

    for s, name, span, ended in zip(stages, names, current, earlier, strict=True):
        status = clean(s.get("status"), 20)
        if isinstance(s.get("attempt"), int) and s["attempt"] > 1:
            status = clean(f"{s.get('status')} #{s['attempt']}", 20)
        bar = [" "] * BAR_WIDTH
        for attempt in ended:
            for i in columns(attempt):
                bar[i] = old
        if span:
            cells = columns(span)
            for i in cells:
                bar[i] = full
            if s.get("status") == "IN_PROGRESS":
                bar[cells[-1]] = part
            deadline = parse_time(s.get("timesOutAt"))
            if deadline is not None and origin is not None:
                mark = int((deadline - origin).total_seconds() / horizon * BAR_WIDTH)
                if 0 <= mark < BAR_WIDTH and bar[mark] == " ":
                    bar[mark] = tick
        note = retry_note(s) if s.get("nextRetryAt") else ""
        lines.append(f"{name.ljust(name_width)}  {status.ljust(20)}  {duration(s.get('duration')).rjust(7)}  "
                     f"|{''.join(bar)}|" + (f"  {note}" if note else ""))
    return "\n".join(lines) + "\n"


def rate(value: object) -> str:
    """A fraction (0..1) as a percentage with one decimal; '-' for null (nothing to divide)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value * 100:.1f}%"


def number(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _get(value: object, *keys: str) -> object:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


SPARK_WIDTH = 30
TOP_STAGES = 5


def insights(answer: dict, scope: str = "every pipeline you see", unicode: bool = True) -> str:
    """`stagetrack insights`: the window, run counts, success rate, durations, queue, MTTR, DORA,
    the slowest stages (by p95) and the flakiest (by flaky rate, those with any), and the series as
    one line per bucket with a bar of its run count."""
    runs: dict = answer["runs"] if isinstance(answer.get("runs"), dict) else {}
    lines = [f"insights of {clean(scope, 120)}, {clean(answer.get('from'))} .. {clean(answer.get('to'))}", ""]
    lines.append(f"runs          {number(runs.get('total'))} total: {number(runs.get('success'))} success, "
                 f"{number(runs.get('failure'))} failure, {number(runs.get('cancelled'))} cancelled, "
                 f"{number(runs.get('timedOut'))} timed out")
    lines.append(f"success rate  {rate(answer.get('successRate'))}  (success / runs not cancelled)")
    lines.append("duration      " + "  ".join(
        f"{k} {duration(_get(answer, 'duration', k))}" for k in ("p50", "p90", "p95", "mean")))
    lines.append("queue         " + "  ".join(f"{k} {duration(_get(answer, 'queue', k))}" for k in ("p50",
                                                                                                    "p95")))
    lines.append(f"MTTR          {duration(answer.get('mttrSeconds'))}  (a failure to the next success)")
    lines += ["", "DORA",
              f"  deployment frequency  {number(_get(answer, 'dora', 'deploymentFrequency'))} per day",
              f"  lead time p50         {duration(_get(answer, 'dora', 'leadTimeSeconds', 'p50'))}",
              f"  change failure rate   {rate(_get(answer, 'dora', 'changeFailureRate'))}",
              f"  time to restore p50   {duration(_get(answer, 'dora', 'timeToRestoreSeconds', 'p50'))}"]
    stages = [s for s in answer.get("stages") or [] if isinstance(s, dict)]

    def p95(s: dict) -> float:
        value = _get(s, "duration", "p95")
        return float(value) if isinstance(value, int | float) else -1.0

    def stage_table(title: str, chosen: list[dict]) -> list[str]:
        rows = [[s.get("name"), number(s.get("runs")), rate(s.get("successRate")),
                 duration(_get(s, "duration", "p50")), duration(_get(s, "duration", "p95")),
                 rate(s.get("flakyRate")), number(s.get("retries"))] for s in chosen]
        return ["", title, table(["STAGE", "RUNS", "SUCCESS", "P50", "P95", "FLAKY", "RETRIES"],
                                 rows).rstrip("\n")]

    if stages:
        lines += stage_table("slowest stages (by p95)", sorted(stages, key=p95, reverse=True)[:TOP_STAGES])
        flaky = [s for s in stages if isinstance(s.get("flakyRate"), int | float) and s["flakyRate"] > 0]
        flaky.sort(key=lambda s: float(s["flakyRate"]), reverse=True)
        lines += (stage_table("flakiest stages (failed, then passed on a retry)", flaky[:TOP_STAGES]) if flaky
                  else ["", "flakiest stages: none (no stage failed and then passed on a retry)"])
    else:
        lines += ["", "stages: none in this window"]
    series = [b for b in answer.get("series") or [] if isinstance(b, dict)]
    if series:
        most = max([b["runs"] for b in series if isinstance(b.get("runs"), int | float)] + [1])
        full = "█" if unicode else "#"
        rows = [[str(b.get("start"))[:10], number(b.get("runs")), rate(b.get("successRate")),
                 duration(b.get("p50")), duration(b.get("p95")),
                 full * (round(b["runs"] / most * SPARK_WIDTH) if isinstance(b.get("runs"),
                                                                             int | float) else 0)]
                for b in series]
        lines += ["", f"series (per {clean(answer.get('granularity'))})",
                  table(["START", "RUNS", "SUCCESS", "P50", "P95", ""], rows,
                        max_width=SPARK_WIDTH).rstrip("\n")]
    return "\n".join(lines) + "\n"


def rebuild(record: dict) -> str:
    """`stagetrack insights rebuild`: the rebuild's record (POST/GET /api/insights/rebuild)."""
    lines = [f"insights rebuild {clean(record.get('id'), 60)}: {clean(record.get('status'), 20)}",
             f"  started   {clean(record.get('startedAt'), 30)} by {clean(record.get('by') or '-', 80)}"]
    if record.get("finishedAt"):
        lines.append(f"  finished  {clean(record.get('finishedAt'), 30)}")
    elif record.get("updatedAt"):
        lines.append(f"  progress  {clean(record.get('updatedAt'), 30)}")
    lines.append(f"  {number(record.get('pipelinesRebuilt'))} pipeline(s) rebuilt, "
                 f"{number(record.get('runsRead'))} run(s) read, "
                 f"{number(record.get('itemsWritten'))} item(s) written")
    if record.get("failure"):
        lines.append(f"  failure: {clean(record.get('failure'), 500)}")
    return "\n".join(lines) + "\n"
