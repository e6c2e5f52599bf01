"""CDEvents, both ways, over the CloudEvents 1.0 HTTP binding.

In: ``POST /api/webhooks/cdevents?source=<name>`` with ``Authorization: Bearer <secret>``; one
CloudEvent in binary mode (``ce-*`` headers, the CDEvent as the JSON body) or structured mode
(``application/cloudevents+json``). pipelineRun queued/started/finished and taskRun
started/finished (0.x) become runs and stages; the delivery id is the CloudEvent's
``source`` + ``id``.

Out: our state changes as CDEvents (spec v0.4.1, over CloudEvents 1.0), for subscribers that
chose ``"format": "cdevents"``.

Why: CDEvents is the CD Foundation's shared vocabulary of CI/CD events, so a dashboard, a
metrics collector or another orchestrator can follow our runs without learning stagetrack's
own event shape. A run is a ``pipelineRun``, a stage a ``taskRun``:

| our change                                            | CDEvent type                                |
|-------------------------------------------------------|---------------------------------------------|
| run created (old status null), not yet final          | ``dev.cdevents.pipelinerun.queued.0.2.0``   |
| run to IN_PROGRESS from IDLE, or from a final status  | ``dev.cdevents.pipelinerun.started.0.2.0``  |
| run to a final status (also created already final)    | ``dev.cdevents.pipelinerun.finished.0.2.0`` |
| stage to IN_PROGRESS                                  | ``dev.cdevents.taskrun.started.0.2.0``      |
| stage to a final status                               | ``dev.cdevents.taskrun.finished.0.2.0``     |
| stage's automatic retry scheduled (its attempt ended) | ``dev.cdevents.taskrun.finished.0.2.0``     |
| stage's automatic retry started (to IN_PROGRESS)      | ``dev.cdevents.taskrun.started.0.2.0``      |
| anything else (WAITING_FOR_APPROVAL, IDLE, deletions) | None: nothing is sent                       |

Every event validates against the official v0.4.1 JSON schemas (vendored as test fixtures in
tests/fixtures/cdevents-schemas/0.4.1, checked by tests/unit/test_cdevents_out.py). Outcomes are
only the values the v0.4.1 text allows (``success``, ``error``, ``failure``): SUCCESS and
SKIPPED are ``success``; FAILURE and TIMED_OUT ``failure`` (the work ran and did not pass);
CANCELLED ``error`` (it was stopped before it could pass or fail). Every non-success carries
``errors`` naming our exact status, e.g. ``run web:1 ended CANCELLED``.

``url`` (required on ``pipelinerun.started``, sent on every event) is where a client reads the
run or stage in our API: ``<public URL>/api/runs/<id>`` and ``<public URL>/api/stages/<id>``,
where the public URL is the ``STAGETRACK_PUBLIC_URL`` setting; unset, the URL is relative to
this service's own origin (``/api/runs/<id>``). The event's ``context.id`` is the StateChange
id, so an at-least-once duplicate is the same CDEvent. Pure: no I/O, one change in, at most
one event out.
What this emits is what our own ``POST /api/webhooks/cdevents`` (``parse`` above) accepts;
tests/integration/test_delivery.py sends a delivered one there and checks the run it makes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import Field, StringConstraints

from ..domain.errors import BadRequest, ValidationFailed
from ..domain.events import (
    RETRY_SCHEDULED,
    RETRY_STARTED,
    RUN_CHANGED,
    STAGE_CHANGED,
    ExternalUpdate,
    Ignored,
    StageUpdate,
    StateChange,
    parse_time,
    sanitize_name,
    stage_type_for,
)
from ..domain.insights import INCIDENT_DETECTED, INCIDENT_RESOLVED, ROLLED_BACK, SignalReceived
from ..domain.status import FINAL, StageStatus
from . import Received
from .common import Vendor, content_type, load_json, same_token, validate_payload

S = StageStatus
CLOUDEVENTS_JSON = "application/cloudevents+json"
CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"


# ---- in: the webhook ------------------------------------------------------------------------------

def verify(secret: str, headers: Mapping[str, str], raw: bytes) -> bool:
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and same_token(token.strip(), secret)


def receive(headers: Mapping[str, str], raw: bytes, source: str) -> Received:
    cloudevent = parse_cloudevent(headers, raw)
    parsed = parse(cloudevent, source)
    # the event, not its encoding: a retry in the other content mode is still the same event
    canonical = json.dumps([cloudevent.type, cloudevent.data], sort_keys=True, separators=(",", ":")).encode()
    return Received(parsed, json.dumps([cloudevent.source, cloudevent.id]), canonical)


_CDEVENT_TYPE = re.compile(r"^dev\.cdevents\.(?P<subject>[a-z]+)\.(?P<predicate>[a-z]+)\."
                           r"(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?:-[0-9A-Za-z.-]+)?$")
_CD_OUTCOMES = {"success": S.SUCCESS, "failure": S.FAILURE, "error": S.FAILURE, "cancel": S.CANCELLED}


@dataclass(frozen=True)
class CloudEvent:
    id: str
    source: str
    type: str
    time: datetime | None
    data: object


CeText = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class StructuredCloudEvent(Vendor):
    specversion: Literal["1.0"]
    id: CeText
    source: CeText
    type: CeText
    time: str | None = None
    datacontenttype: str | None = None
    data: Any = None


def parse_cloudevent(headers: Mapping[str, str], raw: bytes) -> CloudEvent:
    """Binary mode (``ce-*`` headers, the CDEvent as the JSON body) or structured mode
    (``Content-Type: application/cloudevents+json``, the CDEvent in ``data``)."""
    media_type = content_type(headers)
    if media_type == CLOUDEVENTS_BATCH:
        raise BadRequest("batched CloudEvents are not accepted; send one event per request")
    if media_type == CLOUDEVENTS_JSON:
        body = validate_payload(StructuredCloudEvent, load_json(raw), "CloudEvents structured-mode")
        return CloudEvent(id=body.id, source=body.source, type=body.type, time=parse_time(body.time),
                          data=body.data)
    missing = [h for h in ("ce-specversion", "ce-id", "ce-source", "ce-type") if not headers.get(h)]
    if missing:
        raise BadRequest("not a CloudEvent: send ce-specversion, ce-id, ce-source and ce-type headers "
                         f"(binary mode) or Content-Type: {CLOUDEVENTS_JSON}; missing {', '.join(missing)}")
    if headers.get("ce-specversion") != "1.0":
        raise BadRequest(
            f"CloudEvents specversion {headers.get('ce-specversion')!r} is not supported; use 1.0"
        )
    if media_type not in ("", "application/json"):
        raise BadRequest(f"the CDEvent must be sent as application/json, not {media_type}")
    for name in ("ce-id", "ce-source", "ce-type"):
        if len(headers[name]) > 1000:
            raise BadRequest(f"{name} is longer than 1000 characters")
    return CloudEvent(id=headers["ce-id"], source=headers["ce-source"], type=headers["ce-type"],
                      time=parse_time(headers.get("ce-time")), data=load_json(raw))


class CdContext(Vendor):
    id: str | None = None
    type: str | None = None
    timestamp: str | None = None


class CdPipelineRunRef(Vendor):
    id: CeText
    source: str | None = None


class CdRef(Vendor):
    """An environment or service a CDEvent names (``{"id", "source"}``)."""

    id: CeText
    source: str | None = None


class CdContent(Vendor):
    pipelineName: str | None = None
    url: str | None = None  # the run (or task) in the system that sent it
    taskName: str | None = None
    outcome: str | None = None
    errors: str | None = None
    pipelineRun: CdPipelineRunRef | None = None
    environment: CdRef | None = None  # incident.*, service.*
    service: CdRef | None = None  # incident.*


class CdSubject(Vendor):
    id: CeText
    source: str | None = None
    type: str | None = None
    content: CdContent = Field(default_factory=CdContent)  # no instance (and schema build) at import


class CDEvent(Vendor):
    context: CdContext = Field(default_factory=CdContext)
    subject: CdSubject


def _cd_outcome(content: CdContent) -> StageStatus:
    if content.outcome is None:
        return S.FAILURE if content.errors else S.SUCCESS
    status = _CD_OUTCOMES.get(content.outcome)
    if status is None:
        raise ValidationFailed(f"unknown CDEvents outcome {content.outcome!r}; expected one of "
                               f"{', '.join(_CD_OUTCOMES)}", details=[{"field": "subject.content.outcome"}])
    return status


_SIGNALS = {("incident", "detected"): INCIDENT_DETECTED, ("incident", "resolved"): INCIDENT_RESOLVED,
            ("service", "rolledback"): ROLLED_BACK}


def parse(event: CloudEvent, source: str) -> ExternalUpdate | Ignored | SignalReceived:
    """pipelineRun queued/started/finished and taskRun started/finished (0.x versions). A
    pipelineRun is a run of pipeline ``pipelineName``; a taskRun a stage named ``taskName``
    of the run its ``pipelineRun.id`` names (a taskRun of a pipelineRun never announced
    creates that run in a pipeline named after the webhook source). incident detected/resolved
    and service rolledback are signals for the insights (``signal``)."""
    match = _CDEVENT_TYPE.fullmatch(event.type)
    if match is None:
        return Ignored(f"CloudEvent type {event.type!r} is not a CDEvent")
    subject, predicate, major = match.group("subject"), match.group("predicate"), match.group("major")
    handled = {("pipelinerun", "queued"), ("pipelinerun", "started"), ("pipelinerun", "finished"),
               ("taskrun", "started"), ("taskrun", "finished"), *_SIGNALS}
    if (subject, predicate) not in handled:
        return Ignored(f"CDEvent {subject}.{predicate} is not handled")
    if major != "0":
        return Ignored(f"CDEvent version {major}.x of {subject}.{predicate} is not supported (0.x is)")
    body = validate_payload(CDEvent, event.data, "CDEvent")
    if body.context.type and body.context.type != event.type:
        raise ValidationFailed("context.type does not match the CloudEvent type",
                               details=[{"field": "context.type"}])
    content = body.subject.content
    moment = event.time or parse_time(body.context.timestamp)
    if (subject, predicate) in _SIGNALS:
        return signal(event, body, _SIGNALS[(subject, predicate)], moment, source)
    namespace = f"cdevents:{source}"
    if subject == "pipelinerun":
        pipeline = sanitize_name(content.pipelineName or source)
        return ExternalUpdate(
            namespace=namespace, run_key=body.subject.id, pipeline=pipeline, time=moment,
            run_status=_cd_outcome(content) if predicate == "finished" else None,
            trigger="cdevents", summary=f"pipelinerun {predicate}", source_url=content.url,
        )
    if content.pipelineRun is None:
        raise ValidationFailed("a taskRun event needs subject.content.pipelineRun.id",
                               details=[{"field": "subject.content.pipelineRun"}])
    name = sanitize_name(content.taskName or body.subject.id)
    status = S.IN_PROGRESS if predicate == "started" else _cd_outcome(content)
    stage = StageUpdate(name=name, type=stage_type_for(name), status=status,
                        started_at=moment if predicate == "started" else None,
                        ended_at=moment if predicate == "finished" else None)
    return ExternalUpdate(namespace=namespace, run_key=content.pipelineRun.id, pipeline=sanitize_name(source),
                          stages=(stage,), time=moment, trigger="cdevents", summary=f"taskrun {predicate}")


def signal(event: CloudEvent, body: CDEvent, kind: str, moment: datetime | None,
           source: str) -> SignalReceived:
    """An incident or a rollback, for the insights' change failure rate and time to restore
    (docs/insights.md, "Incidents and rollbacks"). Its pipeline is the one named like the
    service (``subject.content.service.id`` of an incident, ``subject.id`` of a
    service.rolledback, whose subject is the service), else the one named like the webhook
    source; its environment is ``subject.content.environment.id``. ``subject.content.artifactId``
    is not matched: stagetrack's deployments record no artifact. Its identity is the
    CloudEvent's source and id, as every delivery's."""
    if moment is None:
        raise ValidationFailed("an incident or rollback needs its time (ce-time or context.timestamp)",
                               details=[{"field": "context.timestamp"}])
    content = body.subject.content
    service = content.service.id if kind != ROLLED_BACK and content.service else None
    if kind == ROLLED_BACK:
        service = body.subject.id
    candidates = [sanitize_name(service)] if service else []
    candidates += [name for name in [sanitize_name(source)] if name not in candidates]
    return SignalReceived(kind=kind, key=json.dumps([event.source, event.id]), at=moment,
                          incident=body.subject.id if kind != ROLLED_BACK else None,
                          candidates=tuple(candidates),
                          environment=content.environment.id if content.environment else None,
                          summary=kind)


# ---- out: our state changes as CDEvents (see the module docstring) ---------------------------

SPEC_VERSION = "0.4.1"  # CDEvents spec release; its core events are the 0.2.0 versions below
CLOUDEVENTS_SPEC_VERSION = "1.0"
SOURCE_PREFIX = "/stagetrack"  # context.source: /stagetrack/<pipeline> (a URI reference)

PIPELINERUN_QUEUED = "dev.cdevents.pipelinerun.queued.0.2.0"
PIPELINERUN_STARTED = "dev.cdevents.pipelinerun.started.0.2.0"
PIPELINERUN_FINISHED = "dev.cdevents.pipelinerun.finished.0.2.0"
TASKRUN_STARTED = "dev.cdevents.taskrun.started.0.2.0"
TASKRUN_FINISHED = "dev.cdevents.taskrun.finished.0.2.0"

# The v0.4.1 outcome values (core events: "success, error or failure"); no "cancel" in 0.4.
SPEC_OUTCOMES = ("success", "error", "failure")
OUTCOMES = {S.SUCCESS: "success", S.SKIPPED: "success", S.FAILURE: "failure", S.TIMED_OUT: "failure",
            S.CANCELLED: "error"}
_FINAL = frozenset(status.value for status in FINAL)


def source_of(pipeline: str) -> str:
    return f"{SOURCE_PREFIX}/{pipeline}"


def cdevent_type(change: StateChange) -> str | None:
    """The CDEvent type a change stands for, or None when CDEvents has no word for it."""
    if change.type == RUN_CHANGED:
        return _run_event_type(change.old_status, change.new_status)
    if change.type in (STAGE_CHANGED, RETRY_STARTED):
        return _stage_event_type(change.new_status)
    if change.type == RETRY_SCHEDULED:
        return TASKRUN_FINISHED  # the attempt before it ended (``retry.reason``)
    return None


def _run_event_type(old: str | None, new: str | None) -> str | None:
    if new is None:
        return None  # deleted
    if old is None:  # created; a run a sender first reported as done is born finished
        return PIPELINERUN_FINISHED if new in _FINAL else PIPELINERUN_QUEUED
    if new == S.IN_PROGRESS.value and (old == S.IDLE.value or old in _FINAL):
        return PIPELINERUN_STARTED  # first start, or started again by a retry
    if new in _FINAL:
        return PIPELINERUN_FINISHED
    return None  # IDLE, WAITING_FOR_APPROVAL, or back from a gate


def _stage_event_type(new: str | None) -> str | None:
    """Only the new status counts: a stage reported running or finished in a new attempt is a
    new start or end even when its status did not change."""
    if new == S.IN_PROGRESS.value:
        return TASKRUN_STARTED
    if new in _FINAL:
        return TASKRUN_FINISHED
    return None


def resource_url(base_url: str | None, collection: str, resource_id: str) -> str:
    """``<base>/api/<collection>/<id>``: absolute with the public URL, else origin-relative."""
    base = (base_url or "").rstrip("/")
    return f"{base}/api/{collection}/{quote(resource_id, safe=':')}"


def to_cdevent(change: StateChange, base_url: str | None = None) -> dict | None:
    """The CDEvent (context + subject) for a change, or None: nothing to send. ``base_url``
    is the public URL of this service (the ``url`` of runs and stages is made from it)."""
    event_type = cdevent_type(change)
    if event_type is None:
        return None
    source = source_of(change.pipeline)
    context = {"version": SPEC_VERSION, "id": change.id, "source": source, "type": event_type,
               "timestamp": change.time}
    subject = _subject(change, source, base_url)
    if event_type in (PIPELINERUN_FINISHED, TASKRUN_FINISHED):  # only finished events have one
        ended = (change.retry or {}).get("reason") if change.type == RETRY_SCHEDULED else change.new_status
        subject["content"].update(_outcome(ended, _what(change)))
    return {"context": context, "subject": subject}


def _what(change: StateChange) -> str:
    if change.type == RUN_CHANGED:
        return f"run {change.run_id}"
    return f"stage {change.stage_name or change.stage_id} of run {change.run_id}"


def _subject(change: StateChange, source: str, base_url: str | None) -> dict:
    assert change.run_id is not None, "only a schedule's skipped firing has no run, and no CDEvent"
    if change.type == RUN_CHANGED:
        subject_id, kind = change.run_id, "pipelineRun"
        content: dict = {
            "pipelineName": change.pipeline,
            "url": resource_url(base_url, "runs", change.run_id),
        }
    else:
        assert change.stage_id is not None, "state_change gives every stage event its stage_id"
        subject_id, kind = change.stage_id, "taskRun"
        content = {"taskName": change.stage_name or change.stage_id,
                   "url": resource_url(base_url, "stages", change.stage_id),
                   "pipelineRun": {"id": change.run_id, "source": source}}
    return {"id": subject_id, "source": source, "type": kind, "content": content}


def _outcome(status: str | None, what: str) -> dict:
    """``outcome`` (and ``errors`` unless it is a success) of a finished run or stage."""
    if status not in _FINAL:
        return {}
    outcome = OUTCOMES[S(status)]
    if outcome == "success":
        return {"outcome": outcome}
    return {"outcome": outcome, "errors": f"{what} ended {status}"}


def body(event: dict) -> str:
    """The exact JSON subscribers receive (and the signature covers)."""
    return json.dumps(event, separators=(",", ":"))


def cloudevent_headers(text: str) -> dict[str, str]:
    """CloudEvents HTTP binary-mode attributes of a CDEvent body (``ce-*``, from its context).
    ValueError when the text is not a CDEvent with the four context fields as strings."""
    try:
        context = json.loads(text).get("context")
        values = [context[name] for name in ("id", "source", "type", "timestamp")]
    except (ValueError, AttributeError, TypeError, KeyError, RecursionError):
        raise ValueError("not a CDEvent with context id, source, type and timestamp") from None
    if not all(isinstance(value, str) and value for value in values):
        raise ValueError("CDEvent context id, source, type and timestamp must be non-empty strings")
    event_id, source, event_type, time = values
    return {"ce-specversion": CLOUDEVENTS_SPEC_VERSION, "ce-id": event_id, "ce-source": source,
            "ce-type": event_type, "ce-time": time}
