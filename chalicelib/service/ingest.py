"""What other systems tell us, applied through the same use cases as the API.

- ``apply_update``: a parsed sender update (GitHub, GitLab, CDEvents, CodePipeline, CodeBuild).
  Its run is found through its link (1 GetItem). A run seen for the first time is created with
  the update already applied and its link, in one transaction (store/sources.py); later updates
  go through ``mutate_run`` (1 Query + 1 conditional transaction, retried on a lost race),
  like every other change. Nothing is ever half-applied.
- ``ingest_command``: the API's own updates arriving on the SQS queue or SNS topic, turned into
  commands by events/messages.py and run through the command table (service/commands.py) that
  the HTTP views use too.
- ``once``: idempotency on the sender's delivery id (GitHub ``X-GitHub-Delivery``, GitLab
  ``Idempotency-Key``/``X-Gitlab-Event-UUID``, CloudEvents ``id`` + ``source``, SQS/SNS
  message ids, EventBridge event ids). It reuses the Idempotency-Key claims of the API
  (store/idempotency.py): the first delivery claims the id (1 conditional PutItem), runs, and
  stores its answer (1 UpdateItem); a replay gets that answer back and changes nothing; a
  delivery that failed releases its claim, so the sender's retry is applied afresh.
- webhook sources: create (the secret is returned once), list, delete, and open the secret
  to verify a request.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .. import integrations
from ..domain import events
from ..domain.clock import format_iso
from ..domain.errors import (
    BadRequest,
    ConcurrentModification,
    Conflict,
    DomainError,
    NotFound,
    ValidationFailed,
)
from ..domain.events import ExternalUpdate, Ignored, SourceName
from ..domain.insights import SignalReceived
from ..domain.model import SOURCES, RunAggregate, RunMetadata, Stage, fill_metadata, new_run
from ..domain.operations import Pipeline
from ..domain.schemas import StrictModel
from ..domain.status import FINAL
from . import ServiceContext, commands, insights, pipelines, runs
from .ports import COMMITTED, DONE, Record, SecretUnreadable, StoredSource
from .runs import mutate_run

log = logging.getLogger(__name__)

RECEIPT_TTL_SECONDS = 14 * 24 * 3600  # SQS keeps a message at most 14 days; GitHub redelivers for 3
RECEIPT_LEASE_SECONDS = 300
MAX_STORED_ANSWER = 64 * 1024


class DeliveryReused(ValidationFailed):
    code = "delivery_id_reused"


class DeliveryInProgress(Conflict):
    code = "delivery_in_progress"


@dataclass
class Outcome:
    result: str  # "applied" | "unchanged" | "ignored"
    run_id: str | None = None
    stages: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: bool = False
    summary: str | None = None

    def as_dict(self) -> dict:
        body: dict = {"result": self.result}
        if self.summary:
            body["event"] = self.summary
        if self.run_id:
            body["runId"] = self.run_id
            body["runCreated"] = self.created
        if self.stages:
            body["stages"] = self.stages
        if self.notes:
            body["notes"] = self.notes
        return body


def ignored(reason: str) -> Outcome:
    return Outcome(result="ignored", notes=[reason])


# ---- sender updates ----------------------------------------------------------------------------

def apply_update(ctx: ServiceContext, update: ExternalUpdate, *, actor: str) -> Outcome:
    now = ctx.clock.now()
    run_id = ctx.stores.links.linked_run(update.namespace, update.run_key)
    if run_id is None:
        counter = ctx.stores.pipelines.claim_counter(update.pipeline, at=now)[0]
        aggregate = new_run(update.pipeline, counter, [], now, commit=update.commit, trigger=update.trigger,
                            metadata=metadata_of(update))
        applied = events.apply_update(aggregate, update, now, actor=actor)
        aggregate.refresh(now)
        if ctx.stores.links.insert_linked_run(aggregate, update.namespace, update.run_key, format_iso(now)):
            return Outcome(result="applied", run_id=aggregate.run.id, created=True, summary=update.summary,
                           stages=_stages(applied.stages), notes=applied.notes)
        run_id = ctx.stores.links.linked_run(update.namespace, update.run_key)  # another delivery won
        if run_id is None:
            raise ConcurrentModification("the sender's run is being created; retry")
    holder: list = []

    def change(aggregate) -> bool:
        holder[:] = [events.apply_update(aggregate, update, ctx.clock.now(), actor=actor)]
        filled = fill_metadata(aggregate.run, metadata_of(update))
        return holder[0].changed or filled

    try:
        # closing the run reads every stage; an update of named stages reads only those
        mutate_run(ctx, run_id, change, local=update.run_status not in FINAL)
    except NotFound:
        return Outcome(result="ignored", run_id=run_id, summary=update.summary,
                       notes=[f"run {run_id} was deleted in stagetrack; the sender's updates are ignored"])
    applied = holder[0]
    return Outcome(
        result="applied" if applied.changed else "unchanged",
        run_id=run_id,
        summary=update.summary,
        stages=_stages(applied.stages),
        notes=applied.notes,
    )


def source_of(namespace: str) -> str | None:
    """The run's ``source`` from the namespace of its sender's keys ("github:<source name>",
    "aws.codepipeline", "cdevents:...")."""
    name = namespace.split(":", 1)[0].removeprefix("aws.")
    return name if name in SOURCES else None


def metadata_of(update: ExternalUpdate) -> RunMetadata:
    """What a sender says of its run, bounded as the API bounds it (an over-long or empty value,
    or a link that is not http(s), is dropped rather than stored)."""
    return RunMetadata(branch=_bounded(update.branch, 255), actor=_bounded(update.sender, 200),
                       source_url=_link(update.source_url), source=source_of(update.namespace),
                       environment=_bounded(update.environment, 100))


def _bounded(value: str | None, most: int) -> str | None:
    if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None
    return value[:most]


def _link(url: str | None) -> str | None:
    if not url or len(url) > 2048 or not url.startswith(("https://", "http://")) \
            or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return None
    return url


def _stages(touched: list[tuple[str, str]]) -> list[dict]:
    return [{"stageId": stage_id, "status": status} for stage_id, status in touched]


def ingest_webhook(ctx: ServiceContext, parsed: ExternalUpdate | Ignored | SignalReceived, *,
                   namespace: str, delivery_id: str, raw: bytes, actor: str) -> tuple[int, dict, bool]:
    """A verified webhook: (HTTP status, answer, replayed). Ignored events are 202 and claim
    nothing; the rest are applied once per delivery id and answered 200. An incident or a
    rollback (``SignalReceived``) goes to the insights (service/insights.py ``receive_signal``);
    one that finds no pipeline is 202 too."""
    if isinstance(parsed, Ignored):
        return 202, ignored(parsed.reason).as_dict(), False
    if isinstance(parsed, SignalReceived):
        signal = parsed
        answer, replayed = once(ctx, namespace, delivery_id, raw,
                                lambda: insights.receive_signal(ctx, signal))
        return (202 if answer["result"] == "ignored" else 200), answer, replayed
    answer, replayed = once(ctx, namespace, delivery_id, raw,
                            lambda: apply_update(ctx, parsed, actor=actor).as_dict())
    return 200, answer, replayed


def parse_event(event: dict) -> ExternalUpdate | Ignored:
    """An EventBridge event, parsed by the event integration whose rule pattern names its
    source (integrations/__init__.py); a source none names is ignored."""
    integration = integrations.for_event(event)
    if integration is None:
        return Ignored(f"{event.get('source')} {event.get('detail-type')!r} events are not handled")
    return integration.parse(event)


def ingest_aws_event(ctx: ServiceContext, event: dict) -> tuple[Outcome, bool]:
    """An EventBridge event (CodePipeline/CodeBuild), once per event id."""
    parsed = parse_event(event)
    if isinstance(parsed, Ignored):
        return ignored(parsed.reason), False
    fingerprint = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str).encode()
    answer, replayed = once(ctx, "aws.events", str(event.get("id")), fingerprint,
                            lambda: apply_update(ctx, parsed, actor=parsed.namespace).as_dict())
    return Outcome(**_outcome_fields(answer)), replayed


def _outcome_fields(answer: dict) -> dict:
    return {"result": answer["result"], "run_id": answer.get("runId"), "stages": answer.get("stages", []),
            "notes": answer.get("notes", []), "created": answer.get("runCreated", False),
            "summary": answer.get("event")}


# ---- the API's own updates on a queue or topic -----------------------------------------------------

def ingest_command(ctx: ServiceContext, action: str, command: commands.Command, *, key: str,
                   payload: bytes, actor: str) -> tuple[dict, bool]:
    """A queue/topic message's command (events/messages.py), applied once per ``key``:
    ``payload`` is the message's canonical form, ``action`` its name in the answer."""
    return once(ctx, "messages", key, payload, lambda: apply_command(ctx, action, command, actor=actor),
                committed=lambda effect: _applied_before(ctx, action, command, effect))


def apply_command(ctx: ServiceContext, action: str, command: commands.Command, *, actor: str) -> dict:
    """The command through the command table; the answer names what it changed, as it is now."""
    return {"result": "applied", "action": action, **_described(commands.execute(ctx, command, actor=actor))}


def _described(changed: object) -> dict:
    if isinstance(changed, RunAggregate):
        return {"runId": changed.run.id, "status": changed.run.status.value}
    if isinstance(changed, Stage):
        return {"stageId": changed.id, "status": changed.status.value}
    if isinstance(changed, Pipeline):
        return {"pipeline": changed.name, "paused": changed.paused}
    raise TypeError(f"a command answered with {type(changed).__name__}")


def _applied_before(ctx: ServiceContext, action: str, command: commands.Command, effect: dict) -> dict:
    """The answer to a message whose action was written but whose answer was never kept (the
    process died in between): what it changed, as it is now; nothing is applied again."""
    answer = {"result": "applied", "action": action, "replayedFromEffect": True}
    stage_id = getattr(command, "stage_id", None)
    run_id = effect.get("run") or getattr(command, "run_id", None)
    pipeline = effect.get("pipeline") or getattr(command, "pipeline", None)
    try:
        if stage_id:
            return {**answer, **_described(runs.get_stage(ctx, stage_id))}
        if isinstance(run_id, str):
            return {**answer, **_described(runs.get_run(ctx, run_id))}
        if isinstance(pipeline, str):
            return {**answer, **_described(pipelines.status(ctx, pipeline))}
        raise NotFound("the effect names no run")
    except NotFound:  # deleted since: it was applied all the same
        if not stage_id and not isinstance(run_id, str) and isinstance(pipeline, str):
            return {**answer, "pipeline": pipeline, "paused": None}
        return {**answer, "runId": run_id, "stageId": stage_id, "status": None}


def is_permanent(error: Exception) -> bool:
    """A message that can never apply (bad, unknown id, illegal now): dead-letter it. A lost
    race or a claim still held by a delivery in flight may pass: retry it."""
    return isinstance(error, DomainError) and not isinstance(
        error, (ConcurrentModification, DeliveryInProgress)
    )


# ---- idempotency on the sender's delivery id ---------------------------------------------------------

def _mac(pepper: str, *parts: str) -> str:
    return hmac.new(pepper.encode(), "\n".join(parts).encode("utf-8", "replace"), hashlib.sha256).hexdigest()


def once(ctx: ServiceContext, namespace: str, delivery_id: str, payload: bytes,
         call: Callable[[], dict], *, committed: Callable[[dict], dict] | None = None) -> tuple[dict, bool]:
    """Run ``call`` once per (namespace, delivery id): returns (answer, replayed).

    With ``committed`` (for calls whose effect is one write, like a queue message's action), the
    claim is held while ``call`` runs, so its write carries the claim's commit (store/
    repository.py ``transact_write``): a delivery that died after its write and before its
    answer was kept is answered by ``committed(effect)`` on redelivery, never applied twice.
    Without it (webhooks and AWS events, whose updates converge when applied again and may take
    several writes), the claim is only a receipt: a delivery that died is applied again."""
    store = ctx.stores.idempotency
    pepper = ctx.settings.secret_pepper
    key_hash = _mac(pepper, "delivery", namespace, delivery_id)
    fingerprint = _mac(pepper, "payload", hashlib.sha256(payload).hexdigest())
    now = int(ctx.clock.now().timestamp())
    held = store.claim(key_hash, fingerprint, now, lease_seconds=RECEIPT_LEASE_SECONDS,
                       ttl_seconds=RECEIPT_TTL_SECONDS)
    if isinstance(held, Record):
        if not hmac.compare_digest(held.fingerprint, fingerprint):
            raise DeliveryReused(f"delivery {delivery_id!r} was already received with a different payload")
        if held.state == COMMITTED and held.body is None and committed is not None:
            return committed(held.effect or {}), True
        if held.state != DONE or held.body is None:
            raise DeliveryInProgress(f"delivery {delivery_id!r} is being processed; retry later")
        return json.loads(held.body), True
    try:
        if committed is None:
            answer = call()
        else:
            with store.holding(key_hash, held):
                answer = call()
    except BaseException:
        store.release(key_hash, held)  # drops only a claim whose write never happened
        raise
    encoded = json.dumps(answer, separators=(",", ":")).encode()
    outcome = store.complete(key_hash, held, 200, {}, encoded, max_stored=MAX_STORED_ANSWER)
    if outcome != "stored":
        log.warning("delivery %s applied but its answer was not kept (%s)", delivery_id, outcome)
    return answer, False


# ---- webhook sources -----------------------------------------------------------------------------

# POST /api/sources. No docstring: it would become the schema's description in /openapi.json.
class CreateSourceIn(StrictModel):
    type: Literal[integrations.webhook_names()]  # type: ignore[valid-type]  # a webhook integration's name
    name: SourceName


def _context(name: str) -> str:
    return f"source:{name}"


def create_source(
    ctx: ServiceContext, body: CreateSourceIn, created_by: str | None
) -> tuple[StoredSource, str]:
    """A new source and its secret, returned here once; stored only sealed (AES-GCM)."""
    secret = events.new_secret()
    box = ctx.box()
    source = StoredSource(name=body.name, type=body.type, sealed_secret=box.seal(secret, _context(body.name)),
                          created_at=format_iso(ctx.clock.now()), created_by=created_by)
    if not ctx.stores.sources.insert_source(source):
        raise Conflict(
            f"a webhook source named {body.name!r} already exists; delete it first to rotate its secret"
        )
    return source, secret


def list_sources(ctx: ServiceContext) -> list[StoredSource]:
    return sorted(ctx.stores.sources.list_sources(), key=lambda s: (s.created_at, s.name))


def delete_source(ctx: ServiceContext, name: str) -> StoredSource:
    source = ctx.stores.sources.delete_source(name) if len(name) <= 64 else None
    if source is None:
        raise NotFound(f"webhook source {name!r} not found")
    return source


def source_secret(ctx: ServiceContext, source_type: str, name: str | None) -> str:
    """The clear secret of a source of this type, to verify one request (never logged)."""
    if not name:
        raise BadRequest("query parameter source is required: the name of the webhook source",
                         details=[{"field": "source"}])
    source = ctx.stores.sources.get_source(name) if len(name) <= 64 else None
    if source is None or source.type != source_type:
        raise NotFound(f"no {source_type} webhook source named {name!r}")
    try:
        return ctx.box().open(source.sealed_secret, _context(name))
    except SecretUnreadable as error:
        log.error("webhook source %s: %s", name, error)
        raise DomainError("the webhook source's secret cannot be read") from None
