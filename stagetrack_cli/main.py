"""`stagetrack`: argument parsing and the commands (docs/cli.md is the manual).

Each command is a function (ctx, args) -> exit code; ``main`` turns a CliError into its message,
its hint and its exit code. Everything from outside (environment, stdin/stdout, the HTTP transport,
the clock and sleep of ``runs watch``) is a parameter of ``main``, so the tests inject them."""
from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import IO, Any

from stagetrack_cli import __version__, config, render
from stagetrack_cli.client import Api, Transport, segment
from stagetrack_cli.errors import (
    AUTH,
    NOT_FOUND,
    OK,
    RUN_FAILED,
    UNAVAILABLE,
    USAGE,
    WATCH_TIMEOUT,
    CliError,
)

STAGE_ACTIONS = {"start": "IN_PROGRESS", "succeed": "SUCCESS", "fail": "FAILURE", "skip": "SKIPPED"}
WATCH_RETRIES = 5  # consecutive failed polls `runs watch` rides out before giving up
MAX_BACKOFF_SECONDS = 60.0  # the longest Retry-After `runs watch` waits for


@dataclass
class Ctx:
    args: argparse.Namespace
    env: dict[str, str]
    stdin: IO[str]
    stdout: IO[str]
    stderr: IO[str]
    transport: Transport | None
    sleep: Callable[[float], None]
    clock: Callable[[], float]

    @property
    def json(self) -> bool:
        return bool(self.args.output == "json")

    def api(self) -> Api:
        cfg = config.load(self.args.url, self.env)
        return Api(cfg.url, cfg.token, self.transport)

    def emit(self, value: Any, human: Callable[[Any], str]) -> None:
        self.stdout.write(json.dumps(value, indent=2) + "\n" if self.json else human(value))
        self.stdout.flush()

    def note(self, text: str) -> None:
        """A remark for a person (stderr, table output only): never mixed into what scripts parse."""
        if not self.json:
            self.stderr.write(text + "\n")


# ---- runs and pipelines ----

def cmd_runs_list(ctx: Ctx, args: argparse.Namespace) -> int:
    query = {"pipeline": args.pipeline, "status": args.status, "branch": args.branch, "actor": args.actor,
             "commit": args.commit, "source": args.source, "createdFrom": args.created_from,
             "createdTo": args.created_to, "limit": args.limit, "cursor": args.cursor}
    page = _pages(ctx.api(), "/api/runs", query, args.all)
    ctx.emit(page, lambda p: render.run_rows(p["items"]))
    _more(ctx, page, "runs list")
    return OK


def cmd_pipelines_list(ctx: Ctx, args: argparse.Namespace) -> int:
    query = {"limit": args.limit, "cursor": args.cursor, "runs": args.runs}
    page = _pages(ctx.api(), "/api/pipelines", query, args.all)

    def human(p: dict) -> str:
        return render.table(
            ["PIPELINE", "PAUSED", "RUNS", "LAST ACTIVITY", "RECENT RUNS (newest first)"],
            [[i.get("name"), "paused" if i.get("paused") else "-", i.get("runCount"), i.get("lastActivityAt"),
              " ".join(f"#{r.get('counter')}:{r.get('status')}" for r in i.get("recentRuns") or [])]
             for i in p["items"]], max_width=80)

    ctx.emit(page, human)
    _more(ctx, page, "pipelines list")
    return OK


def cmd_pipelines_concurrency(ctx: Ctx, args: argparse.Namespace) -> int:
    """Without MODE, the pipeline's status (GET .../status); with it, ``PUT .../concurrency``
    (the setting is stored whole: no --group means the pipeline's name)."""
    api = ctx.api()
    path = f"/api/pipelines/{segment(args.pipeline)}"
    if args.mode is None:
        if args.group is not None:
            raise CliError("--group needs a MODE", USAGE,
                           "stagetrack pipelines concurrency PIPELINE QUEUED --group GROUP")
        answer = api.call("GET", f"{path}/status")
    else:
        body: dict[str, object] = {"mode": args.mode}
        if args.group is not None:
            body["group"] = args.group
        answer = api.call("PUT", f"{path}/concurrency", body=body)
    ctx.emit(answer, render.pipeline_status)
    return OK


def cmd_approvals(ctx: Ctx, args: argparse.Namespace) -> int:
    page = _pages(ctx.api(), "/api/approvals", {"limit": args.limit, "cursor": args.cursor}, args.all)

    def human(p: dict) -> str:
        if not p["items"]:
            return "no stage is waiting for your approval\n"
        return render.table(
            ["RUN", "STAGE", "BRANCH", "ACTOR", "WAITING SINCE"],
            [[run.get("id"), stage.get("name"), run.get("branch"), run.get("actor"), i.get("waitingSince")]
             for i in p["items"]
             for run, stage in [(i.get("run") or {}, i.get("stage") or {})]])

    ctx.emit(page, human)
    if page["items"]:
        ctx.note("decide with: stagetrack approve RUN STAGE [--comment TEXT]  (or reject)")
    _more(ctx, page, "approvals")
    return OK


def _pages(api: Api, path: str, query: dict, every: bool) -> dict:
    page = api.call("GET", path, query)
    _expect_page(page, path)
    if not every:
        return page
    items = list(page["items"])
    seen = set()
    while page.get("nextCursor"):
        if page["nextCursor"] in seen:  # a server handing the same cursor back would loop forever
            raise CliError(f"GET {path}: the server returned the same cursor twice", UNAVAILABLE,
                           "try again without --all")
        seen.add(page["nextCursor"])
        page = api.call("GET", path, {**query, "cursor": page["nextCursor"]})
        _expect_page(page, path)
        items += page["items"]
    return {"items": items, "nextCursor": None}


def _expect_page(page: object, path: str) -> None:
    if not (isinstance(page, dict) and isinstance(page.get("items"), list)):
        raise CliError(f"GET {path}: the answer is not a page of items", UNAVAILABLE,
                       "check that STAGETRACK_URL is the stagetrack API and that it is up to date")


def _more(ctx: Ctx, page: dict, command: str) -> None:
    if page.get("nextCursor"):
        ctx.note(f"more: stagetrack {command} --cursor {render.clean(page['nextCursor'], 2000)}  (or --all)")


def cmd_runs_show(ctx: Ctx, args: argparse.Namespace) -> int:
    run = ctx.api().call("GET", f"/api/runs/{segment(args.run)}",
                         {"include": "attempts"} if args.attempts else None)
    ctx.emit(run, render.run_details)
    return OK


def _poll(ctx: Ctx, api, path: str, params: dict | None, failures: int) -> tuple[dict | None, int, float]:
    """One GET of a polling loop (watch, rebuild --wait): ``(answer, 0, 0.0)``; while the server
    is briefly unavailable (exit code UNAVAILABLE: a 5xx, a 429, a dropped connection) ``(None,
    failures + 1, the Retry-After to honour)``, up to WATCH_RETRIES in a row; then, or on any
    other error, it raises."""
    try:
        return api.call("GET", path, params), 0, 0.0
    except CliError as e:
        failures += 1
        if e.exit_code != UNAVAILABLE or failures > WATCH_RETRIES:
            raise
        ctx.stderr.write(f"stagetrack: {render.clean(e.message, 500)}; "
                         f"retrying ({failures}/{WATCH_RETRIES})\n")
        return None, failures, min(e.retry_after or 0.0, MAX_BACKOFF_SECONDS)


def cmd_runs_watch(ctx: Ctx, args: argparse.Namespace) -> int:
    """Polls the run every --interval seconds and redraws its timeline (in place on a terminal;
    on a pipe, a new frame only when a status changes) until the run ends: 0 for SUCCESS or
    SKIPPED, 1 for FAILURE, CANCELLED or TIMED_OUT, 8 when --timeout passes first."""
    api = ctx.api()
    path = f"/api/runs/{segment(args.run)}"
    tty = _isatty(ctx.stdout) and not ctx.json
    unicode = (getattr(ctx.stdout, "encoding", None) or "").lower().replace("-", "") == "utf8"
    started, failures, last_shape = ctx.clock(), 0, None
    while True:
        run, failures, backoff = _poll(ctx, api, path, {"include": "attempts"} if args.attempts else None,
                                       failures)
        if run is not None:
            status = run.get("status")
            shape = (status, tuple((s.get("status"), s.get("attempt")) for s in run.get("stages") or []))
            if not ctx.json and (tty or shape != last_shape):
                frame = render.timeline(run, unicode)
                if tty:
                    frame += (f"\nevery {args.interval:g} s; Ctrl-C stops watching (not the run)\n")
                ctx.stdout.write(("\x1b[H\x1b[2J" if tty else "\n" if last_shape else "") + frame)
                ctx.stdout.flush()
            last_shape = shape
            if status in render.FINAL:
                if ctx.json:
                    ctx.emit(run, render.run_details)
                return RUN_FAILED if status in render.FAILED else OK
        pause = max(args.interval, backoff)  # a 429's Retry-After is honoured
        if args.timeout is not None:
            left = args.timeout - (ctx.clock() - started)
            if left <= 0:
                raise CliError(f"run {args.run} is still {last_shape[0] if last_shape else 'unknown'} "
                               f"after {args.timeout:g} s", WATCH_TIMEOUT,
                               "watch again, or raise --timeout", code="watch_timeout")
            pause = min(pause, left)  # one last look at the deadline, not an interval after it
        ctx.sleep(pause)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ---- operations ----

def _get_run(api: Api, run: str) -> dict:
    answer = api.call("GET", f"/api/runs/{segment(run)}")
    if not isinstance(answer, dict):
        raise CliError(f"GET /api/runs/{run}: the answer is not a run", UNAVAILABLE,
                       "check that STAGETRACK_URL is the stagetrack API")
    return answer


def find_stage(run: dict, wanted: str) -> dict:
    """A stage of the run by its id, else by its name (names are unique in a run)."""
    stages = [s for s in run.get("stages") or [] if isinstance(s, dict)]
    for key in ("id", "name"):
        for s in stages:
            if s.get(key) == wanted:
                return s
    names = ", ".join(render.clean(s.get("name")) for s in stages) or "none"
    raise CliError(f"run {render.clean(run.get('id'))} has no stage {render.clean(wanted)!s}", NOT_FOUND,
                   f"give a stage's name or id; its stages: {names}", code="not_found")


def _waiting_stage(run: dict) -> dict:
    waiting = [s for s in run.get("stages") or [] if s.get("status") == "WAITING_FOR_APPROVAL"]
    if len(waiting) == 1:
        return waiting[0]
    if not waiting:
        raise CliError(f"no stage of run {render.clean(run.get('id'))} is waiting for approval", NOT_FOUND,
                       "`stagetrack approvals` lists the stages that wait", code="not_found")
    names = ", ".join(render.clean(s.get("name")) for s in waiting)
    raise CliError(f"several stages of run {render.clean(run.get('id'))} wait for approval: {names}", USAGE,
                   "name the stage: stagetrack approve RUN STAGE", code="ambiguous_stage")


def _stage_id(api: Api, run_id: str, stage: str | None) -> str | None:
    if stage is None:
        return None
    return str(find_stage(_get_run(api, run_id), stage)["id"])


def cmd_cancel(ctx: Ctx, args: argparse.Namespace) -> int:
    if args.force and args.stage:
        raise CliError("--force cancels a whole run (its finally stages too)", USAGE,
                       "leave out STAGE to force-cancel the run; a stage's cancel has no force")
    api = ctx.api()
    body: dict | None = {"reason": args.reason} if args.reason is not None else None
    if args.force:
        body = {**(body or {}), "force": True}
    stage_id = _stage_id(api, args.run, args.stage)
    if stage_id:
        result = api.call("POST", f"/api/stages/{segment(stage_id)}/cancel", body=body)
        ctx.emit(result, lambda s: render.stage_rows([s]))
    else:
        result = api.call("POST", f"/api/runs/{segment(args.run)}/cancel", body=body)
        ctx.emit(result, render.run_details)
    return OK


def cmd_retry(ctx: Ctx, args: argparse.Namespace) -> int:
    api = ctx.api()
    stage_id = _stage_id(api, args.run, args.stage)
    if stage_id:
        if args.all:
            raise CliError("--all retries a whole run; a stage is retried alone", USAGE,
                           "drop --all, or drop the STAGE argument")
        result = api.call("POST", f"/api/stages/{segment(stage_id)}/retry")
        ctx.emit(result, lambda s: render.stage_rows([s]))
    else:
        result = api.call("POST", f"/api/runs/{segment(args.run)}/retry",
                          body={"scope": "ALL" if args.all else "FAILED"})
        ctx.emit(result, render.run_details)
    return OK


def cmd_decide(ctx: Ctx, args: argparse.Namespace) -> int:
    api = ctx.api()
    run = _get_run(api, args.run)
    stage = find_stage(run, args.stage) if args.stage is not None else _waiting_stage(run)
    body = {"comment": args.comment} if args.comment is not None else None
    result = api.call("POST", f"/api/stages/{segment(str(stage['id']))}/{args.command}", body=body)
    ctx.emit(result, render.decided_stage)
    return OK


def cmd_stop(ctx: Ctx, args: argparse.Namespace) -> int:
    api = ctx.api()
    run = _get_run(api, args.run)
    body: dict[str, object] = {"reason": args.reason} if args.reason is not None else {}
    if args.grace is not None:
        body["graceSeconds"] = args.grace
    path = f"/api/pipelines/{segment(str(run['pipeline']))}/runs/{int(run['counter'])}/stop"
    result = api.call("POST", path, body=body or None)
    ctx.emit(result, render.run_details)
    return OK


def cmd_stage(ctx: Ctx, args: argparse.Namespace) -> int:
    api = ctx.api()
    stage_id = _stage_id(api, args.run, args.stage)
    result = api.call("PATCH", f"/api/stages/{segment(str(stage_id))}",
                      body={"status": STAGE_ACTIONS[args.action]})
    ctx.emit(result, lambda s: render.stage_rows([s]))
    return OK


# ---- insights ----

def cmd_insights(ctx: Ctx, args: argparse.Namespace) -> int:
    """`GET /api/insights`: figures read from the server's aggregates (one request, no history
    scan). Dates are checked here first so a typo is a usage error (2), not a round trip."""
    for option, value in (("--from", args.date_from), ("--to", args.date_to)):
        if value is not None and not _is_day(value):
            raise CliError(f"{option} {value!r} is not an ISO-8601 date (YYYY-MM-DD)", USAGE,
                           f"e.g. {option} 2026-03-01 (UTC days; --to is included)")
    query = {"pipeline": args.pipeline, "stage": args.stage, "from": args.date_from, "to": args.date_to,
             "granularity": args.granularity}
    answer = ctx.api().call("GET", "/api/insights", query)
    if not (isinstance(answer, dict) and isinstance(answer.get("runs"), dict)):
        raise CliError("GET /api/insights: the answer is not an insights answer", UNAVAILABLE,
                       "check that STAGETRACK_URL is the stagetrack API and that it is up to date")
    scope = f"pipeline {args.pipeline}" if args.pipeline else "every pipeline you see"
    if args.stage:
        scope += f", stage {args.stage}"
    unicode = (getattr(ctx.stdout, "encoding", None) or "").lower().replace("-", "") == "utf8"
    ctx.emit(answer, lambda a: render.insights(a, scope, unicode))
    return OK


REBUILD = "/api/insights/rebuild"


def cmd_insights_rebuild(ctx: Ctx, args: argparse.Namespace) -> int:
    """`POST /api/insights/rebuild` (an admin token not limited to pipelines): the server starts
    rebuilding every aggregate from the stored runs and answers its record at once; ``--status``
    only reads the latest one (GET). With ``--wait``, polls it every --interval seconds until it
    ends. Exit: 0 running (without --wait) or succeeded, 1 failed, 5 one is already running,
    8 when --timeout passes first."""
    api = ctx.api()
    if args.status:
        record = api.call("GET", REBUILD)
    else:
        try:
            record = api.call("POST", REBUILD)
        except CliError as e:
            if e.code == "rebuild_running":
                e.hint = "follow it: stagetrack insights rebuild --status (or --wait after it ends)"
            raise
    started, failures = ctx.clock(), 0
    while args.wait and record.get("status") == "running":
        pause = args.interval
        if args.timeout is not None:
            left = args.timeout - (ctx.clock() - started)
            if left <= 0:
                raise CliError(f"rebuild {record.get('id')} is still running after {args.timeout:g} s",
                               WATCH_TIMEOUT, "it goes on on the server: "
                               "stagetrack insights rebuild --status", code="watch_timeout")
            pause = min(pause, left)
        ctx.note(f"rebuild {render.clean(record.get('id'), 60)}: {number_of(record, 'pipelinesRebuilt')} "
                 f"pipeline(s), {number_of(record, 'runsRead')} run(s) so far")
        ctx.sleep(pause)
        latest, failures, _ = _poll(ctx, api, REBUILD, None, failures)
        if latest is None:
            continue
        if latest.get("id") != record.get("id"):  # taken for dead and replaced by another
            raise CliError(f"rebuild {record.get('id')} was replaced by {latest.get('id')} "
                           "(it stopped making progress)", RUN_FAILED,
                           "stagetrack insights rebuild --status follows the new one",
                           code="rebuild_replaced")
        record = latest
    ctx.emit(record, render.rebuild)
    return RUN_FAILED if record.get("status") == "failed" else OK


def number_of(record: dict, key: str) -> int:
    value = record.get(key)
    return value if isinstance(value, int) else 0


def _is_day(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


# ---- schedules ----

def _schedule_rows(items: list) -> str:
    return render.table(["ID", "CRON", "TIME ZONE", "ENABLED", "NEXT FIRE", "LAST RUN", "LAST SKIPPED"],
                        [[i.get("id"), i.get("cron"), i.get("timeZone"), "yes" if i.get("enabled") else "no",
                          i.get("nextFireAt") or "-", i.get("lastRunId") or "-",
                          _skipped(i.get("lastSkipped"))]
                         for i in items],
                        max_width=80)


def _skipped(skipped: object) -> str:
    """A schedule's latest firing that created no run: "<fire time> <reason>"; "-" for none."""
    if not isinstance(skipped, dict):
        return "-"
    return f"{skipped.get('at')} {skipped.get('reason')}"


def cmd_schedules_list(ctx: Ctx, args: argparse.Namespace) -> int:
    page = ctx.api().call("GET", f"/api/pipelines/{segment(args.pipeline)}/schedules")
    ctx.emit(page, lambda p: _schedule_rows(p["items"]))
    return OK


def cmd_schedules_create(ctx: Ctx, args: argparse.Namespace) -> int:
    body: dict = {"cron": args.cron, "timeZone": args.time_zone}
    if args.disabled:
        body["enabled"] = False
    variables = {}
    for item in args.var or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--var takes KEY=VALUE, got {item!r}", USAGE)
        variables[key] = value
    if variables:
        body["variables"] = variables
    if args.description is not None:
        body["description"] = args.description
    created = ctx.api().call("POST", f"/api/pipelines/{segment(args.pipeline)}/schedules", body=body)
    ctx.emit(created, lambda s: _schedule_rows([s]))
    return OK


def cmd_schedules_enable(ctx: Ctx, args: argparse.Namespace) -> int:
    """`schedules enable|disable`: a PATCH of ``enabled`` alone (enabling computes the next fire
    time again from now; disabling clears it)."""
    path = f"/api/pipelines/{segment(args.pipeline)}/schedules/{segment(args.schedule)}"
    changed = ctx.api().call("PATCH", path, body={"enabled": args.sub == "enable"})
    ctx.emit(changed, lambda s: _schedule_rows([s]))
    return OK


def cmd_schedules_delete(ctx: Ctx, args: argparse.Namespace) -> int:
    path = f"/api/pipelines/{segment(args.pipeline)}/schedules/{segment(args.schedule)}"
    deleted = ctx.api().call("DELETE", path)
    ctx.emit(deleted, lambda s: _schedule_rows([s]))
    return OK


def cmd_run_create(ctx: Ctx, args: argparse.Namespace) -> int:
    body = _create_body(ctx, args)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    run = ctx.api().call("POST", "/api/runs", body=body, headers=headers)
    if args.quiet and not ctx.json:
        ctx.stdout.write(f"{render.clean(run.get('id'))}\n")
    else:
        ctx.emit(run, render.run_details)
    return OK


def _create_body(ctx: Ctx, args: argparse.Namespace) -> dict:
    if args.from_file is not None:
        raw = ctx.stdin.read() if args.from_file == "-" else _read_text(args.from_file)
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise CliError(f"{args.from_file}: not JSON ({e})", USAGE,
                           "give a JSON object (docs/api.md)") from None
        if not isinstance(body, dict):
            raise CliError(f"{args.from_file}: not a JSON object", USAGE, "give a JSON object (docs/api.md)")
    else:
        body = {}
    if args.pipeline is not None:
        body["pipeline"] = args.pipeline
    if "pipeline" not in body:
        raise CliError("which pipeline?", USAGE, "stagetrack run create PIPELINE [options]")
    if args.stage:
        manual = set(args.manual or [])
        stages: list[Any] = []
        for spec in args.stage:
            name, _, kind = spec.rpartition("=")
            item: dict[str, Any] = {"type": kind}
            if name:
                item["name"] = name
            if (name or kind) in manual:
                item["approval"] = "MANUAL"
                manual.discard(name or kind)
            stages.append(item if len(item) > 1 else kind)
        if manual:
            raise CliError(f"--manual names no --stage: {', '.join(sorted(manual))}", USAGE,
                           "use a stage's name as given in --stage NAME=TYPE (or its TYPE)")
        body["stages"] = stages
    elif args.manual:
        raise CliError("--manual needs the stages listed with --stage", USAGE, "add --stage NAME=TYPE ...")
    commit = dict(body.get("commit") or {})
    for key, value in (("hash", args.commit), ("message", args.message), ("committedAt", args.committed_at)):
        if value is not None:
            commit[key] = value
    if commit:
        body["commit"] = commit
    for key, value in (("branch", args.branch), ("environment", args.environment),
                       ("sourceUrl", args.source_url), ("trigger", args.trigger),
                       ("timeoutSeconds", args.timeout_seconds),
                       ("concurrencyGroup", args.concurrency_group),
                       ("stopGraceSeconds", args.stop_grace)):
        if value is not None:
            body[key] = value
    if args.var or args.secret:
        variables = []
        for pair in args.var or []:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise CliError(f"--var {pair!r}: expected KEY=VALUE", USAGE, "e.g. --var ENV=prod")
            variables.append({"key": key, "value": value})
        for key in args.secret or []:
            if key not in ctx.env:
                raise CliError(f"--secret {key}: the environment has no variable {key}", USAGE,
                               f"export {key}=... first: secrets are read from the environment, never from "
                               "the command line (it lands in shell history and `ps`)")
            variables.append({"key": key, "value": ctx.env[key], "secret": True})
        body["variables"] = variables
    return body


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}", USAGE,
                       "give a readable file, or - for stdin") from None


# ---- login / logout ----

def cmd_login(ctx: Ctx, args: argparse.Namespace) -> int:
    path = config.config_path(ctx.env)
    url = args.url or ctx.env.get(config.URL_ENV) or config.read_file(path).get("url")
    if not url:
        raise CliError("which server?", USAGE, "stagetrack login --url https://... (or set STAGETRACK_URL)")
    url = config.check_url(str(url))
    token = _read_token(ctx)
    if not args.no_verify:
        try:
            Api(url, token, ctx.transport).call("GET", "/api/runs", {"limit": 1})
        except CliError as e:
            if e.status == 401 or e.exit_code in (UNAVAILABLE,) or e.status is None:
                raise CliError(f"not logged in: {e.message}", e.exit_code,
                               e.hint if e.status != 401 else "check the token (nothing was saved)",
                               e.status, e.code, e.body) from None
            # any other answer (403, 400...) came after the token was accepted
    config.write_file(path, url, token)
    ctx.note(f"logged in to {url}; the token is saved in {path} (mode 0600)")
    if ctx.json:
        ctx.emit({"url": url, "config": str(path)}, str)
    return OK


def _read_token(ctx: Ctx) -> str:
    if _isatty(ctx.stdin):
        token = getpass.getpass("Token: ", stream=ctx.stderr)  # type: ignore[arg-type]
    else:
        token = ctx.stdin.readline()
    token = token.strip()
    if not token:
        raise CliError("no token given", AUTH,
                       "type it at the prompt, or pipe it in: stagetrack login < token-file")
    if any(ord(c) < 0x21 or ord(c) == 0x7f for c in token):
        raise CliError("the token has spaces or control characters", AUTH, "paste the token alone")
    return token


def cmd_logout(ctx: Ctx, args: argparse.Namespace) -> int:
    path = config.config_path(ctx.env)
    try:
        os.unlink(path)
        ctx.note(f"removed {path} (the token stays valid until an admin revokes it)")
    except FileNotFoundError:
        ctx.note(f"not logged in ({path} does not exist)")
    return OK


# ---- the parser ----

def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", choices=["table", "json"], default=argparse.SUPPRESS,
                        help="table for people (default), json for scripts")
    common.add_argument("--url", default=argparse.SUPPRESS, help="the API's base URL (else STAGETRACK_URL, "
                        "else the one `stagetrack login` saved)")

    top = argparse.ArgumentParser(
        prog="stagetrack", parents=[common],
        description="Follow and operate stagetrack pipeline runs. The server and token come from "
                    "STAGETRACK_URL and STAGETRACK_TOKEN, or from `stagetrack login`.",
        epilog="exit codes: 0 ok, 1 the watched run failed, 2 usage, 3 auth (401/403), 4 not found, "
               "5 conflict, 6 invalid request, 7 unavailable (network, 429, 5xx), 8 watch timed out")
    top.add_argument("--version", action="version", version=f"stagetrack {__version__}")
    top.set_defaults(output="table", url=None)
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def page_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--limit", type=int, help="items per page (1-100)")
        p.add_argument("--cursor", help="the page after the one that printed this cursor")
        p.add_argument("--all", action="store_true", help="every page")

    runs = commands.add_parser("runs", help="list, show and watch runs").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True)
    p = runs.add_parser("list", parents=[common], help="runs, newest first, across pipelines")
    p.add_argument("--pipeline")
    p.add_argument("--status")
    p.add_argument("--branch")
    p.add_argument("--actor")
    p.add_argument("--commit", help="a commit sha")
    p.add_argument("--source", help="native, github, gitlab, cdevents, codepipeline, ...")
    p.add_argument("--created-from", metavar="ISO")
    p.add_argument("--created-to", metavar="ISO")
    page_options(p)
    p.set_defaults(func=cmd_runs_list)
    p = runs.add_parser("show", parents=[common], help="a run with its stages")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--attempts", action="store_true", help="with each stage's ended attempts")
    p.set_defaults(func=cmd_runs_show)
    p = runs.add_parser("watch", parents=[common],
                        help="a live timeline until the run ends (exit 1 if it fails)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--interval", type=_positive, default=2.0, help="seconds between polls (default 2)")
    p.add_argument("--timeout", type=_positive, help="give up (exit 8) after this many seconds")
    p.add_argument("--attempts", action="store_true",
                   help="draw earlier attempts of retried stages too (one more read per retried stage)")
    p.set_defaults(func=cmd_runs_watch)

    pipelines = commands.add_parser("pipelines", help="list pipelines").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True)
    p = pipelines.add_parser("list", parents=[common], help="pipelines, most recently active first")
    p.add_argument("--runs", type=int, help="recent runs shown per pipeline (0-20, default 5)")
    page_options(p)
    p.set_defaults(func=cmd_pipelines_list)

    p = pipelines.add_parser("concurrency", parents=[common],
                             help="show a pipeline's concurrency (and lock), or set its mode")
    p.add_argument("pipeline", metavar="PIPELINE")
    p.add_argument("mode", metavar="MODE", nargs="?", type=str.upper,
                   choices=["PARALLEL", "QUEUED", "SUPERSEDED"],
                   help="PARALLEL (runs overlap), QUEUED (a new run waits) or SUPERSEDED (a new run "
                        "cancels the active one); runs created from now on follow it")
    p.add_argument("--group", help="the default group (default: the pipeline's name)")
    p.set_defaults(func=cmd_pipelines_concurrency)

    p = commands.add_parser("approvals", parents=[common],
                            help="stages waiting for your approval, oldest first")
    page_options(p)
    p.set_defaults(func=cmd_approvals)

    p = commands.add_parser("cancel", parents=[common], help="cancel a run, or one of its stages")
    p.add_argument("run", metavar="RUN")
    p.add_argument("stage", metavar="STAGE", nargs="?", help="a stage's name or id")
    p.add_argument("--reason")
    p.add_argument("--force", action="store_true",
                   help="force-cancel: finally (always) stages are skipped or cancelled too")
    p.set_defaults(func=cmd_cancel)
    p = commands.add_parser("retry", parents=[common],
                            help="retry a run's failed stages (--all: every stage), or one stage")
    p.add_argument("run", metavar="RUN")
    p.add_argument("stage", metavar="STAGE", nargs="?")
    p.add_argument("--all", action="store_true")
    p.set_defaults(func=cmd_retry)
    for name, verb in (("approve", "approve"), ("reject", "reject")):
        p = commands.add_parser(name, parents=[common], help=f"{verb} a stage waiting for approval")
        p.add_argument("run", metavar="RUN")
        p.add_argument("stage", metavar="STAGE", nargs="?", help="default: the run's one waiting stage")
        p.add_argument("--comment")
        p.set_defaults(func=cmd_decide)
    p = commands.add_parser("stop", parents=[common],
                            help="stop a run gracefully: running stages may finish, nothing new starts")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--reason")
    p.add_argument("--grace", type=int, metavar="SECONDS",
                   help="how long running stages may finish (default: the run's, else 600)")
    p.set_defaults(func=cmd_stop)

    stage = commands.add_parser("stage", help="report a stage's progress (what a CI job calls)")
    actions = stage.add_subparsers(dest="sub", metavar="ACTION", required=True)
    for action, status in STAGE_ACTIONS.items():
        q = actions.add_parser(action, parents=[common], help=f"set the stage to {status}")
        q.add_argument("run", metavar="RUN")
        q.add_argument("stage", metavar="STAGE", help="a stage's name or id")
        q.set_defaults(func=cmd_stage, action=action)

    run = commands.add_parser("run", help="create a run").add_subparsers(dest="sub", metavar="SUBCOMMAND",
                                                                         required=True)
    p = run.add_parser("create", parents=[common], help="create a run (POST /api/runs)")
    p.add_argument("pipeline", metavar="PIPELINE", nargs="?")
    p.add_argument("--stage", action="append", metavar="[NAME=]TYPE",
                   help="a stage, in order (repeat); default: the six standard stages")
    p.add_argument("--manual", action="append", metavar="NAME", help="that stage waits for approval (repeat)")
    p.add_argument("--branch")
    p.add_argument("--commit", metavar="SHA")
    p.add_argument("--message", help="the commit message")
    p.add_argument("--committed-at", metavar="ISO")
    p.add_argument("--environment")
    p.add_argument("--source-url")
    p.add_argument("--trigger")
    p.add_argument("--timeout-seconds", type=int, help="each stage's default timeout")
    p.add_argument("--concurrency-group", metavar="GROUP",
                   help="runs of this group never overlap: it waits (QUEUED) while one is active")
    p.add_argument("--stop-grace", type=int, metavar="SECONDS",
                   help="how long a stop lets its running stages finish, unless the stop says (default 600)")
    p.add_argument("--var", action="append", metavar="KEY=VALUE")
    p.add_argument("--secret", action="append", metavar="KEY",
                   help="a secret variable, its value read from the environment variable KEY")
    p.add_argument("--from-file", metavar="FILE", help="a JSON body to start from (- for stdin)")
    p.add_argument("--idempotency-key")
    p.add_argument("-q", "--quiet", action="store_true", help="print the new run's id only")
    p.set_defaults(func=cmd_run_create)

    p = commands.add_parser("insights", parents=[common],
                            help="success rate, durations, DORA, slowest and flakiest stages "
                                 "(GET /api/insights)")
    p.add_argument("--pipeline", help="one pipeline (default: every pipeline the token sees)")
    p.add_argument("--stage", help="one stage name")
    p.add_argument("--from", dest="date_from", metavar="DAY",
                   help="first day, YYYY-MM-DD (default: the 30 days ending --to)")
    p.add_argument("--to", dest="date_to", metavar="DAY", help="last day, included (default: today, UTC)")
    p.add_argument("--granularity", choices=["day", "week"], help="the series' bucket (default day)")
    p.set_defaults(func=cmd_insights)
    q = p.add_subparsers(dest="sub", metavar="SUBCOMMAND").add_parser(
        "rebuild", parents=[common], help="rebuild every aggregate from the stored runs, on the server "
                                          "(admin; POST /api/insights/rebuild)")
    q.add_argument("--wait", action="store_true", help="wait until it ends (exit 1 if it failed)")
    q.add_argument("--status", action="store_true", help="only show the latest rebuild (start none)")
    q.add_argument("--interval", type=_positive, default=2.0, metavar="SECONDS",
                   help="seconds between polls with --wait (default 2)")
    q.add_argument("--timeout", type=_positive, metavar="SECONDS", help="give up waiting after this (exit 8)")
    q.set_defaults(func=cmd_insights_rebuild)

    schedules = commands.add_parser("schedules", help="a pipeline's cron schedules").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True)
    p = schedules.add_parser("list", parents=[common], help="the pipeline's schedules")
    p.add_argument("pipeline")
    p.set_defaults(func=cmd_schedules_list)
    p = schedules.add_parser("create", parents=[common], help="a cron schedule that starts runs")
    p.add_argument("pipeline")
    p.add_argument("cron", help="five fields, e.g. '0 9 * * MON-FRI' (quote it)")
    p.add_argument("--time-zone", default="UTC", help="IANA time zone (default UTC)")
    p.add_argument("--var", action="append", metavar="KEY=VALUE", help="a variable of each run (repeatable)")
    p.add_argument("--disabled", action="store_true", help="create it disabled")
    p.add_argument("--description", help="what it is for (shown in lists)")
    p.set_defaults(func=cmd_schedules_create)
    for verb in ("enable", "disable"):
        p = schedules.add_parser(verb, parents=[common], help=f"{verb} a schedule")
        p.add_argument("pipeline")
        p.add_argument("schedule", help="its id (sch_...)")
        p.set_defaults(func=cmd_schedules_enable)
    p = schedules.add_parser("delete", parents=[common], help="delete a schedule")
    p.add_argument("pipeline")
    p.add_argument("schedule", help="its id (sch_...)")
    p.set_defaults(func=cmd_schedules_delete)

    p = commands.add_parser("login", parents=[common],
                            help="save the server and a token (read from stdin or a prompt, "
                                 "never from the command line)")
    p.add_argument("--no-verify", action="store_true", help="save without asking the server")
    p.set_defaults(func=cmd_login)
    p = commands.add_parser("logout", parents=[common], help="remove the saved token")
    p.set_defaults(func=cmd_logout)
    return top


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None, *, env: dict[str, str] | None = None,
         stdin: IO[str] | None = None, stdout: IO[str] | None = None, stderr: IO[str] | None = None,
         transport: Transport | None = None,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> int:
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            args = parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version (0) or a usage error (2), already printed
        return int(e.code or 0) if isinstance(e.code, int) else USAGE
    ctx = Ctx(args, dict(os.environ) if env is None else env, stdin or sys.stdin, stdout, stderr, transport,
              sleep, clock)
    try:
        return int(args.func(ctx, args))
    except CliError as e:
        if ctx.json:
            stdout.write(json.dumps(e.as_json()) + "\n")
        stderr.write(f"stagetrack: error: {render.clean(e.message, 500)}\n")
        if e.hint:
            stderr.write(f"  {e.hint}\n")
        return e.exit_code
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        # an answer without the API's shape (another server, a proxy's page): no traceback
        stderr.write(f"stagetrack: error: the server's answer does not have the API's shape "
                     f"({type(e).__name__}: {render.clean(e, 200)})\n"
                     "  check that STAGETRACK_URL is the stagetrack API and that it is up to date\n")
        return UNAVAILABLE
    except KeyboardInterrupt:
        stderr.write("\n")
        return 130
    except BrokenPipeError:
        return OK


if __name__ == "__main__":
    sys.exit(main())
