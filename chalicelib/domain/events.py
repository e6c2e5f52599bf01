"""Events in and out, as pure rules: what other CI systems tell us, what we tell others.

In: each sender's payload (GitHub ``workflow_run``/``workflow_job``, GitLab pipeline and job
hooks, CDEvents, CodePipeline and CodeBuild EventBridge events) is parsed by its integration
(chalicelib/integrations/, loaded only when a payload arrives) into one ``ExternalUpdate``:
which of the sender's runs it is about (``namespace`` + ``run_key``), the pipeline name it maps
to, the stages it reports and the run's final status if it has one.
``apply_update`` applies it to a loaded run by the transition table, so the same rules hold for
every sender:
- a stage is found by name (the sender's job/stage/task name, sanitised) and added when new;
- statuses only move forward. A sender may skip steps (a job seen only when it completed goes
  IDLE -> IN_PROGRESS -> SUCCESS at the job's own start and end times); an update that would go
  backwards (a late "in_progress" after "completed") is ignored, never an error;
- a newer attempt of the sender's job (GitHub ``run_attempt``, GitLab ``retries_count``,
  CodePipeline RESUMED) archives the stage's attempt and starts the next one, as retry does;
- a stage that ended SKIPPED without ever starting (we closed it when its run ended, or the
  sender skipped it) and that the sender then reports running or finished, in the same attempt,
  ran after all (a GitLab manual job played after its pipeline finished): it is reopened and
  moves on from IDLE at the sender's times. A report of it waiting or pending changes nothing;
- a stage the sender allows to fail (GitLab ``allow_failure``) keeps its FAILURE, and the run
  counts it as passed (``model.run_status_of``), as the sender's own pipeline status does;
- a final run status closes whatever the sender never reported as finished (running stages
  take the run's outcome, stages that never started become SKIPPED; a cancel is ``cancel_run``,
  and even when the run already reads as finished, every stage still active is CANCELLED and
  every stage that never started SKIPPED: a cancelled run leaves nothing IDLE);
  a run the sender finished without reporting any stage gets one stage named ``pipeline``.
Unknown event types are ``Ignored`` (the webhook answers 202); payloads that are not what the
sender documents are ``ValidationFailed`` (422) naming the field.

Out: a committed change of a run or stage becomes at most one ``StateChange`` (decoded from
its stream record by the store, store/stream.py); its id is derived from the item and its
versions, so a record read twice gives the same event id (consumers de-duplicate on it).

Also here: webhook secrets, the delivery backoff, the subscriber URL policy and the request
models of subscriptions. Signatures and wire formats are the integrations' (chalicelib/integrations/).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets as random_secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints

from . import ids
from .clock import format_iso, parse_iso
from .errors import ValidationFailed
from .model import RunAggregate, Stage, change_status
from .operations import cancel_run, new_attempt, record_cancellation, resume
from .schemas import StrictModel
from .status import FINAL, StageStatus, StageType, is_legal

S = StageStatus
# Stages a sender may add to one run. A GitHub matrix makes up to 256 jobs; 500 keeps the run
# item (a summary of every stage, plus a pending change of all of them: store/repository.py)
# well under DynamoDB's 400 KB item limit even with 100-character names. Jobs past it are
# ignored and reported in the webhook's answer (200, so the sender does not retry forever).
MAX_EXTERNAL_STAGES = 500
SUMMARY_STAGE = "pipeline"  # the stage of a run finished without any stage reported


# ---- names -----------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_DASHES = re.compile(r"-{2,}")
MAX_NAME = 100


def sanitize_name(text: str, fallback: str = "unnamed") -> str:
    """A pipeline or stage name (``ids.PIPELINE_PATTERN``) from any sender's name.

    "/" becomes "." (``octo-org/hello-world`` + ``CI`` -> ``octo-org.hello-world.CI``), every
    other run of characters outside ``[A-Za-z0-9_.-]`` becomes one "-", leading "." and "-" are
    dropped. Longer than 100 characters: cut to 91 plus "-" and 8 hex chars of a hash of the
    original, so two long names that differ only at the end stay apart.
    """
    cleaned = _DASHES.sub("-", _UNSAFE.sub("-", text.replace("/", ".").strip()))
    cleaned = cleaned.lstrip(".-").rstrip("-") or fallback
    if len(cleaned) > MAX_NAME:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        cleaned = f"{cleaned[:91].rstrip('.-')}-{digest}"
    return cleaned


def stage_type_for(name: str, default: StageType = StageType.OTHER) -> str:
    """A stage named like a stage type (``build``, ``deploy-prod``) gets that type, else OTHER."""
    candidate = name.upper().replace("-", "_").replace(".", "_")
    return StageType(candidate).value if candidate in StageType.__members__ else default.value


# ---- times -----------------------------------------------------------------------------------

_GITLAB_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(\.\d+)? UTC$")


def parse_time(value: object) -> datetime | None:
    """ISO-8601 (``Z`` or an offset) or GitLab's ``2016-08-12 15:23:28 UTC``; anything else is
    None (a timestamp we cannot read never fails an event; the clock's time is used)."""
    if not isinstance(value, str) or not value:
        return None
    match = _GITLAB_TIME.fullmatch(value)
    if match:
        value = f"{match.group(1)}T{match.group(2)}{match.group(3) or ''}Z"
    try:
        return parse_iso(value)
    except ValueError:
        return None


# ---- secrets and backoff --------------------------------------------------------------------

SOURCE_SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """256 random bits, URL-safe: fits GitHub's secret, GitLab's token and a Bearer token."""
    return SOURCE_SECRET_PREFIX + random_secrets.token_urlsafe(32)


BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 900  # SQS's longest DelaySeconds


def backoff_seconds(attempt: int, delivery_id: str) -> int:
    """Delay before attempt ``attempt + 1``: 30 s doubling to the 15 min cap, plus up to 10 %
    jitter drawn from the delivery id (deterministic, so a test can predict it, yet different
    per delivery so a receiver coming back is not hit by every retry at once)."""
    base = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1))
    spread = int(hashlib.sha256(f"{delivery_id}:{attempt}".encode()).hexdigest()[:4], 16) / 0xFFFF
    return min(BACKOFF_CAP_SECONDS, base + int(base * 0.1 * spread))


# ---- the update model and its rules -------------------------------------------------------------

@dataclass(frozen=True)
class StageUpdate:
    name: str
    type: str = StageType.OTHER.value
    status: StageStatus | None = None  # None: make sure the stage exists, change nothing
    attempt: int | None = None  # the sender's attempt number, when it has one
    restart: bool = False  # the sender restarted a finished stage (CodePipeline RESUMED)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    via_approval: bool = True  # the sender's own gate opened (GitHub environments, Manual approval)
    allow_failure: bool | None = None  # the sender lets it fail without failing the run; None: not said


@dataclass(frozen=True)
class ExternalUpdate:
    namespace: str  # whose run keys these are: "github:<source>", "aws.codepipeline", ...
    run_key: str  # the sender's run identity (GitHub run id, GitLab pipeline id, ...)
    pipeline: str
    stages: tuple[StageUpdate, ...] = ()
    run_status: StageStatus | None = None  # only final statuses change anything
    time: datetime | None = None
    commit: dict | None = None
    trigger: str | None = None
    summary: str = ""  # for logs and the webhook's answer, e.g. "workflow_job completed"
    # Where the sender's run comes from (model.RunMetadata), recorded when it creates our run.
    branch: str | None = None
    sender: str | None = None  # the sender's user who started it: the run's actor
    source_url: str | None = None  # the run in the sender's own UI
    environment: str | None = None


@dataclass(frozen=True)
class Ignored:
    """A well-formed event we do not act on (unknown type, ping, a build CodePipeline owns)."""

    reason: str


@dataclass
class Applied:
    changed: bool = False
    stages: list[tuple[str, str]] = field(default_factory=list)  # (stage id, status) touched
    notes: list[str] = field(default_factory=list)


def status_path(current: StageStatus, target: StageStatus) -> list[StageStatus] | None:
    """The legal steps from ``current`` to ``target`` ([] when already there), or None when the
    target lies behind (a late or duplicate update). Steps a sender may skip are filled in."""
    if current == target:
        return []
    if is_legal(current, target):
        return [target]
    if current == S.IDLE and target in (S.SUCCESS, S.FAILURE, S.TIMED_OUT):
        return [S.IN_PROGRESS, target]
    if current == S.WAITING_FOR_APPROVAL and target in (S.SUCCESS, S.TIMED_OUT):
        return [S.IN_PROGRESS, target]
    return None


def append_stage(aggregate: RunAggregate, name: str, stage_type: str, now: datetime,
                 attempt: int = 1) -> Stage:
    position = max((s.position for s in aggregate.stages), default=0) + 1
    stage = Stage(id=ids.stage_id(aggregate.run.id, position), run_id=aggregate.run.id,
                  position=position, type=stage_type, name=name, status=S.IDLE, created_at=now,
                  updated_at=now, attempt=max(1, attempt), first_attempt=max(1, attempt))
    aggregate.stages.append(stage)
    return stage


def _clamp(moment: datetime | None, now: datetime, floor: datetime | None = None) -> datetime:
    """A sender's timestamp, but never in our future and never before the stage started."""
    moment = min(moment or now, now)
    return max(moment, floor) if floor is not None else moment


def _move(stage: Stage, path: list[StageStatus], update: StageUpdate, at: datetime, now: datetime) -> None:
    for step in path:
        if step == S.IN_PROGRESS:
            moment = _clamp(update.started_at or at, now)
        elif step in FINAL:
            moment = _clamp(update.ended_at or at, now, stage.started_at)
        else:
            moment = _clamp(at, now)
        change_status(stage, step, moment, via_approval=update.via_approval)
    stage.updated_at = now


def apply_update(aggregate: RunAggregate, update: ExternalUpdate, now: datetime, *, actor: str) -> Applied:
    """Apply a sender's update to a loaded run (see the module docstring for the rules)."""
    result = Applied()
    at = _clamp(update.time, now)
    by_name = {s.name: s for s in aggregate.stages}
    over_cap: list[str] = []
    for reported in update.stages:
        stage = by_name.get(reported.name)
        if stage is None:
            if len(aggregate.stages) >= MAX_EXTERNAL_STAGES:
                over_cap.append(reported.name)
                continue
            stage = append_stage(aggregate, reported.name, reported.type, now, reported.attempt or 1)
            by_name[stage.name] = stage
            result.changed = True
        if reported.attempt is not None and reported.attempt < stage.attempt:
            result.notes.append(f"stage {stage.name}: attempt {reported.attempt} is older than "
                                f"attempt {stage.attempt}; ignored")
            continue
        wanted_attempt = reported.attempt or stage.attempt
        if reported.restart and stage.status in FINAL and reported.attempt is None:
            wanted_attempt = stage.attempt + 1
        while stage.attempt < wanted_attempt:
            if stage.status not in FINAL:  # the sender moved on without telling us how it ended
                change_status(stage, S.CANCELLED, at)
            new_attempt(stage, now)
            resume(aggregate)  # the sender runs it again: no longer stopped or cancelled here
            result.changed = True
        if reported.allow_failure is not None and reported.allow_failure != stage.allow_failure:
            stage.allow_failure = reported.allow_failure
            result.changed = True
        if reported.status is not None and _ran_after_skip(stage, reported, wanted_attempt):
            stage.status, stage.ended_at, stage.duration_ms = S.IDLE, None, None
            result.notes.append(f"stage {stage.name}: skipped before, reported {reported.status.value} "
                                "now; reopened")
        if reported.status is not None:
            path = status_path(stage.status, reported.status)
            if path is None:
                result.notes.append(f"stage {stage.name}: {stage.status.value} -> "
                                    f"{reported.status.value} would go backwards; ignored")
            elif path:
                _move(stage, path, reported, at, now)
                result.changed = True
        result.stages.append((stage.id, stage.status.value))
    if over_cap:  # one note, however many: the answer stays small
        shown = ", ".join(over_cap[:5]) + (", ..." if len(over_cap) > 5 else "")
        result.notes.append(f"{len(over_cap)} stage(s) ignored: a run holds at most {MAX_EXTERNAL_STAGES} "
                            f"stages ({shown})")
    if update.run_status in FINAL:
        if _close_run(aggregate, update.run_status, at, now, actor=actor, result=result):
            result.changed = True
    return result


def _ran_after_skip(stage: Stage, reported: StageUpdate, attempt: int) -> bool:
    """The sender reports a stage that ended SKIPPED without starting as running or finished,
    in the same attempt (not a newer one: that is a retry, handled above)."""
    return (stage.status == S.SKIPPED and stage.started_at is None and attempt == stage.attempt
            and reported.status in (S.IN_PROGRESS, *FINAL) and reported.status != S.SKIPPED)


def _close_run(aggregate: RunAggregate, final: StageStatus, at: datetime, now: datetime, *,
               actor: str, result: Applied) -> bool:
    if not aggregate.stages:
        summary = append_stage(aggregate, SUMMARY_STAGE, StageType.OTHER.value, now)
        _move(summary, status_path(S.IDLE, final) or [], StageUpdate(SUMMARY_STAGE), at, now)
        result.stages.append((summary.id, summary.status.value))
        return True
    changed = False
    if final == S.CANCELLED:
        reason = "cancelled in the sending system"
        changed = cancel_run(aggregate, at, actor=actor, reason=reason)
        if not changed and any(stage.status not in FINAL for stage in aggregate.stages):
            # the run already reads as finished (a job reported canceled): cancel_run leaves it
            # alone, but the sender said the run was cancelled, so nothing may stay open
            record_cancellation(aggregate, at, actor, reason, None)
    for stage in aggregate.stages:
        if stage.status in FINAL:
            continue
        target: StageStatus
        if stage.status == S.IN_PROGRESS:
            target = final if final in (S.SUCCESS, S.FAILURE, S.TIMED_OUT) else S.CANCELLED
        elif stage.status == S.WAITING_FOR_APPROVAL:
            target = S.SKIPPED if final in (S.SUCCESS, S.SKIPPED) else S.CANCELLED
        else:
            target = S.SKIPPED
        change_status(stage, target, _clamp(at, now, stage.started_at))
        stage.updated_at = now
        result.stages.append((stage.id, stage.status.value))
        changed = True
    return changed


def commit_of(sha: object, message: object = None, committer: object = None,
              committed_at: datetime | None = None) -> dict | None:
    """A run's commit as the native API stores it (``CommitIn``), or None if unusable."""
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{7,64}", sha):
        return None
    commit: dict = {"hash": sha}
    if isinstance(message, str) and message:
        commit["message"] = message[:4000]
    if isinstance(committer, str) and committer:
        commit["committer"] = committer[:200]
    if committed_at is not None:
        commit["committedAt"] = format_iso(committed_at)
    return commit


def trigger_of(*parts: object) -> str | None:
    text = ":".join(str(p) for p in parts if p not in (None, ""))
    return text[:100] or None


# ---- out: state changes (decoded from stream records by store/stream.py) -----------------------

RUN_CHANGED = "run.status-changed"
STAGE_CHANGED = "stage.status-changed"
# A stage still waiting for approval ``remindAfterSeconds`` after it began to wait (its approval
# policy: domain/approvals.py); old and new status are both WAITING_FOR_APPROVAL.
APPROVAL_REMINDER = "stage.approval-reminder"
# Automatic retries (domain/retries.py): an attempt that ran ended FAILURE or TIMED_OUT and the
# stage's policy scheduled the next one (newStatus RETRY_PENDING, ``attempt`` the new one), and
# that attempt starting (oldStatus RETRY_PENDING). Both carry ``retry``: which automatic retry of
# how many, and for the scheduled one when it starts and what the attempt before it ended as.
RETRY_SCHEDULED = "stage.retry-scheduled"
RETRY_STARTED = "stage.retry-started"
# A decision on a gate of an approval policy that leaves it waiting (1 of 2 approvals): old and
# new status both WAITING_FOR_APPROVAL. Every decision, this one or the one that opens or fails the
# gate (then on its ``stage.status-changed``), carries ``approval``: who, when, the comment, and
# how many approvals of how many required the gate has.
APPROVAL_DECIDED = "stage.approval-decided"
# A cron schedule's firing (domain/schedules.py): ``schedule.fired`` names the run it created
# (``runId``; the run's own ``run.status-changed`` follows as for any new run), ``schedule.skipped``
# a firing that created none (``runId`` null: the pipeline was paused). Both carry ``schedule``:
# its id, cron, time zone and the fire time (and, skipped, the reason and message).
SCHEDULE_FIRED = "schedule.fired"
SCHEDULE_SKIPPED = "schedule.skipped"
# A running attempt past its recent p95 (domain/overruns.py), once per attempt; old and new
# status are both IN_PROGRESS, and it carries ``overrun``: its start, elapsed time, expectation.
STAGE_OVERRUNNING = "stage.overrunning"
EVENT_TYPES = (RUN_CHANGED, STAGE_CHANGED, APPROVAL_REMINDER, APPROVAL_DECIDED, RETRY_SCHEDULED,
               RETRY_STARTED, STAGE_OVERRUNNING, SCHEDULE_FIRED, SCHEDULE_SKIPPED)
EVENT_SOURCE = "stagetrack"


@dataclass(frozen=True)
class StateChange:
    id: str
    type: str
    time: str
    pipeline: str
    run_id: str | None  # None: a schedule's firing that created no run
    stage_id: str | None
    stage_name: str | None
    old_status: str | None
    new_status: str | None
    attempt: int | None
    retry: dict | None = None  # the retry events' ``retry``; absent from other events' bodies
    # A run's event to CANCELLING or CANCELLED: the run's ``cancellation`` record (by, at, reason,
    # stageId, force), so a subscriber learns why (a cancel, a stop, a run superseded or, in a
    # NEWEST queue, replaced) without reading the run; absent from other events' bodies.
    cancellation: dict | None = None
    overrun: dict | None = None  # ``stage.overrunning``'s ``overrun``; absent from the others'
    approval: dict | None = None  # a gate's decision (``APPROVAL_DECIDED``); absent when none
    schedule: dict | None = None  # the schedule events' ``schedule``; absent from the others

    @property
    def detail_type(self) -> str:
        """EventBridge ``detail-type``: ``stagetrack.run.status-changed`` or ``...stage...``."""
        return f"{EVENT_SOURCE}.{self.type}"

    def as_dict(self) -> dict:
        body: dict[str, object] = {
            "id": self.id, "type": self.type, "time": self.time, "pipeline": self.pipeline,
            "runId": self.run_id, "stageId": self.stage_id, "stageName": self.stage_name,
            "oldStatus": self.old_status, "newStatus": self.new_status, "attempt": self.attempt}
        if self.retry is not None:
            body["retry"] = dict(self.retry)
        if self.cancellation is not None:
            body["cancellation"] = dict(self.cancellation)
        if self.overrun is not None:
            body["overrun"] = dict(self.overrun)
        if self.approval is not None:
            body["approval"] = dict(self.approval)
        if self.schedule is not None:
            body["schedule"] = dict(self.schedule)
        return body

    def body(self) -> str:
        """The exact JSON subscribers receive (and sign over)."""
        return json.dumps(self.as_dict(), separators=(",", ":"))


def delivery_id(event_id: str, subscription_id: str) -> str:
    """The same event to the same subscriber always has the same delivery id (dedupe key)."""
    return "dlv_" + hashlib.sha256(f"{event_id}|{subscription_id}".encode()).hexdigest()[:24]


# ---- subscriptions and sources: request models and policy ----------------------------------------

SourceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")]
EventFilter = Literal["run.status-changed", "stage.status-changed", "stage.approval-reminder",
                      "stage.approval-decided", "stage.retry-scheduled", "stage.retry-started",
                      "stage.overrunning", "schedule.fired", "schedule.skipped", "*"]
PipelineName = Annotated[str, StringConstraints(pattern=ids.PIPELINE_PATTERN)]
FORMAT_STAGETRACK: Final = "stagetrack"  # our own event JSON (``StateChange.body``)
FORMAT_CDEVENTS: Final = "cdevents"  # a CDEvent over the CloudEvents HTTP binding (integrations/cdevents.py)
SubscriptionFormat = Literal["stagetrack", "cdevents"]
SUBSCRIPTION_FORMATS = (FORMAT_STAGETRACK, FORMAT_CDEVENTS)


class CreateSubscriptionIn(StrictModel):
    url: Annotated[str, StringConstraints(min_length=10, max_length=2048)]
    events: Annotated[list[EventFilter], Field(min_length=1, max_length=len(EVENT_TYPES) + 1)]
    pipelines: Annotated[list[PipelineName], Field(min_length=1, max_length=50)] | None = None
    statuses: Annotated[list[StageStatus], Field(min_length=1, max_length=len(StageStatus))] | None = None
    secret: (
        Annotated[str, StringConstraints(min_length=16, max_length=256, pattern=r"^[\x21-\x7e]+$")] | None
    ) = None
    description: Annotated[str, StringConstraints(max_length=200)] | None = None
    format: SubscriptionFormat = FORMAT_STAGETRACK


@dataclass(frozen=True)
class SubscriptionFilter:
    events: tuple[str, ...]
    pipelines: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None

    def matches(self, change: StateChange) -> bool:
        if "*" not in self.events and change.type not in self.events:
            return False
        if self.pipelines is not None and change.pipeline not in self.pipelines:
            return False
        return self.statuses is None or change.new_status in self.statuses


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_subscriber_url(url: str, *, allow_local: bool) -> str:
    """The SSRF stance, first line: https only, to a host name or a public IP address; no
    credentials in the URL. ``allow_local`` (a local/test setting) also admits
    ``http://127.0.0.1``/``localhost``. The delivery client checks again, after resolving the
    host name, that every address it would connect to is public (adapters/http.py)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationFailed("url is not a valid URL", details=[{"field": "url"}]) from None
    host = (parts.hostname or "").lower()
    if not host:
        raise ValidationFailed("url needs a host", details=[{"field": "url"}])
    if parts.username or parts.password:
        raise ValidationFailed("url must not carry credentials; subscribers verify the signature",
                               details=[{"field": "url"}])
    if parts.fragment:
        raise ValidationFailed("url must not have a #fragment", details=[{"field": "url"}])
    local = host in LOCAL_HOSTS
    if parts.scheme != "https" and not (parts.scheme == "http" and local and allow_local):
        raise ValidationFailed("url must be https (http://127.0.0.1 only when "
                               "STAGETRACK_ALLOW_LOCAL_SUBSCRIBERS is set)", details=[{"field": "url"}])
    if local and not allow_local:
        raise ValidationFailed("url must not point at this machine", details=[{"field": "url"}])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None and (":" in host or "%" in host or _numeric_last_label(host)):
        raise ValidationFailed("url host must be a host name or a plain IPv4/IPv6 address "
                               "(no shorthand, octal, hex or zone id)", details=[{"field": "url"}])
    if address is not None and not address_allowed(str(address), allow_local=allow_local):
        raise ValidationFailed("url must not point at a private, loopback or link-local address "
                               "(also not one embedded in an IPv6 address)", details=[{"field": "url"}])
    if port is not None and not 1 <= port <= 65535:
        raise ValidationFailed("url has an invalid port", details=[{"field": "url"}])
    return url


def _numeric_last_label(host: str) -> bool:
    """``2130706433``, ``127.1``, ``0x7f.1``: no DNS name ends in an all-numeric label, but
    resolvers read these as IPv4 addresses, so they would bypass the literal-address check."""
    last = host.rstrip(".").rsplit(".", 1)[-1]
    return last.isdigit() or last.startswith("0x")


# IPv6 ranges that carry an IPv4 address a packet may end up at (or that have no public use).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: IPv4 in the last 32 bits
_REFUSED_V6 = (
    ipaddress.ip_network("::/96"),             # IPv4-compatible (deprecated, RFC 4291)
    ipaddress.ip_network("64:ff9b:1::/48"),    # local-use NAT64 (RFC 8215), never public
    ipaddress.ip_network("2001::/32"),         # Teredo: the client IPv4 is XOR-ed, refuse it all
)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address forwards to: IPv4-mapped, NAT64 or 6to4."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour  # 2002:AABB:CCDD::/48 -> AA.BB.CC.DD, else None


def _ip_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_local: bool) -> bool:
    if ip.version == 6:
        if int(ip) > 1 and any(ip in network for network in _REFUSED_V6):  # :: and ::1 as usual
            return False
        inner = embedded_ipv4(ip)
        if inner is not None and not _ip_allowed(inner, allow_local=False):
            return False
    return ip.is_global or (allow_local and ip.is_loopback)


def address_allowed(address: str, *, allow_local: bool) -> bool:
    """Second line, at delivery: may we connect to this resolved address? Only a public one
    (loopback too with ``allow_local``), and an IPv6 address only if the IPv4 address it embeds
    (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16) is public too; IPv4-compatible ::/96,
    local NAT64 64:ff9b:1::/48 and Teredo 2001::/32 are refused whatever they embed."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return _ip_allowed(ip, allow_local)
