"""PynamoDB items of the single stagetrack table.

One table, keyed ``pk``/``sk``:

| item      | pk                 | sk              | notes                                   |
|-----------|--------------------|-----------------|-----------------------------------------|
| pipeline  | ``PIPE#<name>``    | ``#PIPELINE``   | run counter (atomic ADD), pause, layout |
| run       | ``RUN#<run id>``   | ``#RUN``        | indexed by pipeline/counter (GSIs)      |
| stage     | ``RUN#<run id>``   | ``STAGE#0001``  | same partition: run + stages = 1 Query  |
| attempt   | ``ATTEMPTS#<stage id>``| ``ATTEMPT#0001``| one ended attempt; never read with the run |
| idem. key | ``IDEM#<hash>``    | ``#IDEM``       | Idempotency-Key claim, TTL 24 h         |
| source    | ``SOURCES``        | ``SOURCE#<name>``| webhook source, secret sealed (AES-GCM) |
| ext. link | ``LINK#<hash>``    | ``#LINK``       | sender's run (GitHub run ...) -> run id |
| subscr.   | ``SUBSCRIPTIONS``  | ``SUB#<id>``    | outbound webhook, secret sealed         |
| delivery  | ``DELIV#<sub id>`` | ``<time>#<id>#<n>``| one delivery attempt, TTL 14 days    |
| token     | ``TOKEN#<sha256>`` | ``#TOKEN``      | looked up and rate-counted in 1 update  |
| token ref | ``TOKENS``         | ``TOKEN#<id>``  | the admin listing of tokens (1 Query)   |
| session   | ``SESSION#<sha256>``| ``#SESSION``   | browser session: token hash, CSRF, TTL  |
| schedule  | ``SCHEDULES#<pipeline>``| ``SCHEDULE#<id>``| cron schedule; in activeStages while enabled |
| insights  | ``INSIGHTS[#<pipeline>]``| ``DAY#<day>#...``, ``STATE``| day aggregates (store/insights.py) |
| ins. mark | ``INSMARK#<run id>``| ``A#…``, ``R#…``, ``RUN``| what the insights consumer applied |
| group     | ``GROUP#<pipeline>``| ``GROUP#<name>``| concurrency group: holder + queue (store/groups.py) |

The classes below are the schema only: they name no table, and using one directly for I/O fails
(PynamoDB: "Models must have a table_name"). ``item_models(table, region, host)`` makes a copy of
the whole hierarchy bound to one table and endpoint (``ItemModels``: every class a subclass of its
schema class here, so ``isinstance`` and typing still hold), cached per (table, region, endpoint)
and sharing one botocore client. ``store/dynamo.py``'s ``build_stores`` hands it to every store, so
two contexts on two tables (or endpoints) coexist in one process.

Why a copy of the hierarchy and not subclasses of each class alone: PynamoDB binds table and
host in a model's ``Meta`` at class definition time, and the ``kind`` discriminator maps each
stored value ("run", "stage", ...) to exactly one class. A bound hierarchy gets its own base
class with its own ``kind`` attribute, so a Query on one table's base class builds that table's
classes. Making one costs about a millisecond (no I/O: the client is created on first use).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TypeVar, cast

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    DiscriminatorAttribute,
    NumberAttribute,
    UnicodeAttribute,
    VersionAttribute,
)
from pynamodb.connection import Connection
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection
from pynamodb.models import MetaModel, Model

RUN_SK = "#RUN"
PIPELINE_SK = "#PIPELINE"
STAGE_SK_PREFIX = "STAGE#"
ACTIVE_SHARDS = 4


def run_pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def pipeline_pk(pipeline: str) -> str:
    return f"PIPE#{pipeline}"


IDEMPOTENCY_SK = "#IDEM"
# states of an Idempotency-Key record (store/idempotency.py): claimed and running; its effect
# committed (written in the effect's own transaction) but no response stored yet; answered
IDEM_PENDING = "PENDING"
IDEM_COMMITTED = "COMMITTED"
IDEM_DONE = "DONE"


def idempotency_pk(key_hash: str) -> str:
    return f"IDEM#{key_hash}"


def stage_sk(position: int) -> str:
    return f"{STAGE_SK_PREFIX}{position:04d}"


# What the byPipeline and byPipelineStatus indexes hold besides their keys: what a run listing
# shows (store/repository.run_from_item) and what a dialect's pipeline lookup reads (PipelineItem).
# Not the run's summary (counters, change counter, latest end), its intent, version or secrets'
# salt: a change of one stage updates only those, so it writes no index entry (issue 12).
LISTED_ATTRIBUTES = [
    "kind", "run_id", "pipeline", "pipeline_status", "status", "created_at", "updated_at",
    "started_at", "ended_at", "duration_ms", "commit", "trigger", "variables", "timeout_seconds",
    "auto_advance", "secrets", "cancellation", "stage_summary",
    "name", "paused", "pause_cause", "paused_by", "paused_at", "layout",
    # the run's metadata (issue 13): set at create, never changed, so never a write of its own
    "branch", "actor", "source_url", "source", "environment",
]
# The indexes people search runs by (store/finder.py): keys only, plus ``kind`` (PynamoDB reads an
# item's class from it) -- a search reads the runs it keeps by key (BatchGetItem). Their keys are
# set once, at create, on run items only (sparse), so no later change of a run or a stage writes
# an entry in them; ``runsByTime`` also holds the run's status, so a search by status reads only
# the runs it returns (a change of the run's status rewrites that one entry).
SEARCH_INDEXES = {  # index name -> its hash key attribute (range: created_key)
    "runsByTime": "run_feed", "runsByBranch": "branch", "runsByActor": "actor",
    "runsByCommit": "commit_sha", "runsBySource": "source",
}
SEARCH_PROJECTION = {"runsByTime": ["kind", "status"]}  # the others: ["kind"]
RUN_FEED = "RUNS"  # every run's run_feed: the runsByTime index is one time line
PIPELINE_FEED = "PIPELINES"  # every pipeline's pipe_feed (pipelinesByActivity)
PIPELINE_LISTED = ["kind", "name", "paused", "counter"]  # what GET /api/pipelines shows of one
WAITING_FEED = "WAITING"  # a stage waiting for approval: its approval_feed (approvalsWaiting)
# What the stagesByPipeline index holds of a stage item: its summary in a run listing
# (model.stage_summary), for GoCD's pipeline and stage histories.
SUMMARY_ATTRIBUTES = ["kind", "run_id", "position", "name", "type", "status", "attempt", "approval",
                      "approval_decision", "started_at", "ended_at"]
# A stage's place in that index: its run's counter * STAGE_SLOTS + its position.
STAGE_SLOTS = 1000

ATTEMPT_SK_PREFIX = "ATTEMPT#"


def attempts_pk(stage_id: str) -> str:
    """A stage's ended attempts have a partition of their own: the run's Query (run + stages)
    never reads them, and a stage's history is one Query, one attempt one GetItem."""
    return f"ATTEMPTS#{stage_id}"


def attempt_sk(number: int) -> str:
    return f"{ATTEMPT_SK_PREFIX}{number:04d}"


# The partitions of the table, as IAM's ``dynamodb:LeadingKeys`` condition names them (StringLike):
# infra/generate.py lets each non-API function reach only the families its code uses, so e.g. a
# compromised delivery or timer function cannot write a token item. A new partition family goes
# here, and into the ``partitions`` of each function that reaches it.
PARTITIONS = {
    "runs": "RUN#*",                 # a run and its stages
    "pipelines": "PIPE#*",
    "attempts": "ATTEMPTS#*",        # a stage's ended attempts
    "idempotency": "IDEM#*",         # Idempotency-Key claims, webhook delivery ids
    "links": "LINK#*",               # sender's run -> run id
    "sources": "SOURCES",            # webhook sources (secrets sealed)
    "subscriptions": "SUBSCRIPTIONS",
    "deliveries": "DELIV#*",
    "tokens": "TOKEN#*",             # store/tokens.py: tokens, sessions, access keys, the listing
    "token_listing": "TOKENS",
    "sessions": "SESSION#*",
    "access_keys": "ACCESSKEY#*",
    "schedules": "SCHEDULES#*",      # a pipeline's cron schedules (store/schedules.py)
    "insights": "INSIGHTS*",         # day aggregates and pipeline state (store/insights.py)
    "insight_marks": "INSMARK#*",    # what the insights consumer applied, per run
    "groups": "GROUP#*",             # a pipeline's concurrency groups (store/groups.py)
}


class BaseItem(Model):
    class Meta:
        table_name: str | None = None  # schema only: see item_models()
        region = "us-east-1"
        host: str | None = None

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    kind = DiscriminatorAttribute()


class PipelinesByCodeArtsJob(GlobalSecondaryIndex):
    """The byPipeline index, read by a pipeline item's CodeArts alias (see PipelineItem)."""

    class Meta:
        index_name = "byPipeline"
        projection = IncludeProjection(LISTED_ATTRIBUTES)

    codearts_key = UnicodeAttribute(hash_key=True, attr_name="pipeline")
    counter = NumberAttribute(range_key=True)


class PipelinesByBuddyId(GlobalSecondaryIndex):
    """The byPipelineStatus index, read by a pipeline item's Buddy alias (see PipelineItem)."""

    class Meta:
        index_name = "byPipelineStatus"
        projection = IncludeProjection(LISTED_ATTRIBUTES)

    buddy_key = UnicodeAttribute(hash_key=True, attr_name="pipeline_status")
    counter = NumberAttribute(range_key=True)


class PipelinesByActivity(GlobalSecondaryIndex):
    class Meta:
        index_name = "pipelinesByActivity"
        projection = IncludeProjection(PIPELINE_LISTED)

    pipe_feed = UnicodeAttribute(hash_key=True)
    last_activity = UnicodeAttribute(range_key=True)


class RunsByTime(GlobalSecondaryIndex):
    class Meta:
        index_name = "runsByTime"
        projection = IncludeProjection(SEARCH_PROJECTION["runsByTime"])

    run_feed = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class RunsByBranch(GlobalSecondaryIndex):
    class Meta:
        index_name = "runsByBranch"
        projection = IncludeProjection(["kind"])

    branch = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class RunsByActor(GlobalSecondaryIndex):
    class Meta:
        index_name = "runsByActor"
        projection = IncludeProjection(["kind"])

    actor = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class RunsByCommit(GlobalSecondaryIndex):
    class Meta:
        index_name = "runsByCommit"
        projection = IncludeProjection(["kind"])

    commit_sha = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class RunsBySource(GlobalSecondaryIndex):
    class Meta:
        index_name = "runsBySource"
        projection = IncludeProjection(["kind"])

    source = UnicodeAttribute(hash_key=True)
    created_key = UnicodeAttribute(range_key=True)


class PipelineItem(BaseItem, discriminator="pipeline"):
    name = UnicodeAttribute()
    counter = NumberAttribute(default=0)
    paused = BooleanAttribute(default=False)
    pause_cause = UnicodeAttribute(null=True)
    paused_by = UnicodeAttribute(null=True)
    paused_at = UnicodeAttribute(null=True)
    layout = UnicodeAttribute(null=True)  # JSON: stage layout of the latest run (operations.layout_of)
    concurrency = UnicodeAttribute(null=True)  # JSON: {mode, group} (domain/concurrency.Setting)
    # The ids the dialects address the pipeline by ("#codearts:<job_id>", "#buddy:<pipeline_id>",
    # domain/dialect_ids.py), set with every run number claimed. They live in the attributes the
    # byPipeline and byPipelineStatus indexes are keyed on (an overloaded index: no run's key
    # starts with '#'), so an id is found back by one Query and needs no item of its own.
    codearts_key = UnicodeAttribute(null=True, attr_name="pipeline")
    buddy_key = UnicodeAttribute(null=True, attr_name="pipeline_status")

    # GET /api/pipelines: set with every run number claimed (the new run's creation time), so a
    # pipeline moves to the top of the pipelinesByActivity index with each run, at no extra write.
    pipe_feed = UnicodeAttribute(null=True)
    last_activity = UnicodeAttribute(null=True)

    by_codearts_job = PipelinesByCodeArtsJob()
    by_buddy_id = PipelinesByBuddyId()
    by_activity = PipelinesByActivity()



class RunsByPipeline(GlobalSecondaryIndex):
    class Meta:
        index_name = "byPipeline"
        projection = IncludeProjection(LISTED_ATTRIBUTES)

    pipeline = UnicodeAttribute(hash_key=True)
    counter = NumberAttribute(range_key=True)


class RunsByPipelineStatus(GlobalSecondaryIndex):
    class Meta:
        index_name = "byPipelineStatus"
        projection = IncludeProjection(LISTED_ATTRIBUTES)

    pipeline_status = UnicodeAttribute(hash_key=True)
    counter = NumberAttribute(range_key=True)


class RunItem(BaseItem, discriminator="run"):
    run_id = UnicodeAttribute()
    pipeline = UnicodeAttribute()
    counter = NumberAttribute()
    pipeline_status = UnicodeAttribute()
    status = UnicodeAttribute()
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    started_at = UnicodeAttribute(null=True)
    ended_at = UnicodeAttribute(null=True)
    duration_ms = NumberAttribute(null=True)
    commit = UnicodeAttribute(null=True)  # JSON
    trigger = UnicodeAttribute(null=True)
    variables = UnicodeAttribute(null=True)  # JSON
    timeout_seconds = NumberAttribute(null=True)
    auto_advance = BooleanAttribute(null=True)
    secrets = UnicodeAttribute(null=True)  # JSON: key -> keyed hash of a secret variable
    cancellation = UnicodeAttribute(null=True)  # JSON: latest cancel (by, at, reason, stageId)
    # JSON: the run's stop or cancel until a retry (model.Run.stopping): its status is derived with
    # it (CANCELLING/CANCELLED); only changes of the whole run set or clear it, bumping ``version``.
    stopping = UnicodeAttribute(null=True)
    stop_grace_seconds = NumberAttribute(null=True)
    # The previous layout's JSON list of every stage in brief (model.stage_summary): read while a
    # run stored that way is not written again, removed by its next write (repository.py,
    # "Layouts"). Listings now take the summary from the stage items.
    stage_summary = UnicodeAttribute(null=True)
    # The run's summary, kept by atomic updates so that writers of different stages never
    # conflict (repository.py, "One stage's change"): how many stages count as each status
    # (model.status_counts), a change counter every write adds one to, the latest stage end.
    n_idle = NumberAttribute(null=True, attr_name="n_IDLE")
    n_in_progress = NumberAttribute(null=True, attr_name="n_IN_PROGRESS")
    n_waiting_for_approval = NumberAttribute(null=True, attr_name="n_WAITING_FOR_APPROVAL")
    n_success = NumberAttribute(null=True, attr_name="n_SUCCESS")
    n_failure = NumberAttribute(null=True, attr_name="n_FAILURE")
    n_cancelled = NumberAttribute(null=True, attr_name="n_CANCELLED")
    n_timed_out = NumberAttribute(null=True, attr_name="n_TIMED_OUT")
    n_skipped = NumberAttribute(null=True, attr_name="n_SKIPPED")
    n_queued = NumberAttribute(null=True, attr_name="n_QUEUED")  # always absent: no stage is QUEUED
    n_retry_pending = NumberAttribute(null=True, attr_name="n_RETRY_PENDING")
    seq = NumberAttribute(null=True)
    last_end = UnicodeAttribute(null=True)
    # Where the run comes from (model.RunMetadata), and its keys in the search indexes
    # (SEARCH_INDEXES): written once, with the run.
    branch = UnicodeAttribute(null=True)
    actor = UnicodeAttribute(null=True)
    source_url = UnicodeAttribute(null=True)
    source = UnicodeAttribute(null=True)
    environment = UnicodeAttribute(null=True)
    commit_sha = UnicodeAttribute(null=True)  # the commit's hash, lower case
    run_feed = UnicodeAttribute(null=True)
    created_key = UnicodeAttribute(null=True)  # "<created_at>#<run id>": newest first, unique
    # Its concurrency group (domain/concurrency.py), set at create; ``queued`` while it waits
    # there (its status is then QUEUED), removed by its promotion or its cancel.
    concurrency_group = UnicodeAttribute(null=True)
    queued = BooleanAttribute(null=True)
    # A change too big for one transaction, committed here first and then written to its stage
    # items in chunks (repository.py, "big runs"): readers apply it, writers complete it first.
    intent_id = UnicodeAttribute(null=True)
    intent = BinaryAttribute(null=True, legacy_encoding=False)  # zlib-compressed JSON
    # While an intent is pending the run item sits in the sparse activeStages index, due a little
    # later, so the sweeper completes a change whose writer died mid-way.
    active_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    # Epoch seconds, the table's TTL: set on a finished run (its end + the retention), removed
    # if it is re-opened, by the retention consumer of the stream (store/retention.py), never
    # by the writers (a whole-run Put drops it; the consumer sets it again).
    expires_at = NumberAttribute(null=True)
    version = VersionAttribute()

    by_pipeline = RunsByPipeline()
    by_pipeline_status = RunsByPipelineStatus()
    by_time = RunsByTime()
    by_branch = RunsByBranch()
    by_actor = RunsByActor()
    by_commit = RunsByCommit()
    by_source = RunsBySource()


class ActiveStages(GlobalSecondaryIndex):
    """Sparse: only stages that are IN_PROGRESS, WAITING_FOR_APPROVAL or RETRY_PENDING carry
    these keys."""

    class Meta:
        index_name = "activeStages"
        projection = IncludeProjection(["status", "attempt", "stage_id"])

    active_shard = UnicodeAttribute(hash_key=True)
    due_at = UnicodeAttribute(range_key=True)


class ApprovalsWaiting(GlobalSecondaryIndex):
    """Sparse: only a stage in WAITING_FOR_APPROVAL carries these keys; oldest first."""

    class Meta:
        index_name = "approvalsWaiting"
        projection = IncludeProjection(["kind"])

    approval_feed = UnicodeAttribute(hash_key=True)
    waiting_key = UnicodeAttribute(range_key=True)  # "<waiting_since>#<stage id>"


class StagesByPipeline(GlobalSecondaryIndex):
    """Every stage of a pipeline's runs in brief, by (run counter, position): one Query gives the
    stage summaries of a page of runs (GoCD's histories) without a copy of them on the run item,
    which every change of a stage would have to rewrite."""

    class Meta:
        index_name = "stagesByPipeline"
        projection = IncludeProjection(SUMMARY_ATTRIBUTES)

    listed_pipeline = UnicodeAttribute(hash_key=True)
    listed_at = NumberAttribute(range_key=True)


class StageItem(BaseItem, discriminator="stage"):
    stage_id = UnicodeAttribute()
    run_id = UnicodeAttribute()
    position = NumberAttribute()
    type = UnicodeAttribute()
    name = UnicodeAttribute()
    status = UnicodeAttribute()
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    started_at = UnicodeAttribute(null=True)
    ended_at = UnicodeAttribute(null=True)
    duration_ms = NumberAttribute(null=True)
    timeout_seconds = NumberAttribute(null=True)
    expected_seconds = NumberAttribute(null=True)
    approval = UnicodeAttribute(default="AUTO")
    attempt = NumberAttribute(default=1)
    # The previous layout kept ended attempts here (JSON list); read, and moved to attempt items
    # on the stage's next write (repository.stage_to_item). Never written any more.
    attempts = UnicodeAttribute(null=True)
    first_attempt = NumberAttribute(null=True)  # always written; absent: an item of the previous layout
    waiting_since = UnicodeAttribute(null=True)
    approval_decision = UnicodeAttribute(null=True)  # JSON: this attempt's approve/reject
    approval_policy = UnicodeAttribute(null=True)  # JSON: a MANUAL stage's policy (domain/approvals.py)
    approvals = UnicodeAttribute(null=True)  # JSON list: every decision of this attempt (policy gates)
    reminded_at = UnicodeAttribute(null=True)  # when this wait's approval reminder went out
    allow_failure = BooleanAttribute(null=True)  # kept only when true (GitLab allow_failure)
    # Automatic retries (domain/retries.py): the policy (JSON), how many it had, and while one
    # is pending when it starts and the status the attempt before it ended with.
    retry_policy = UnicodeAttribute(null=True)
    auto_retries = NumberAttribute(null=True)  # kept only when not zero
    next_retry_at = UnicodeAttribute(null=True)
    retry_reason = UnicodeAttribute(null=True)
    always = BooleanAttribute(null=True)  # kept only when true: a finally stage (model.Stage.always)
    cancel_at = UnicodeAttribute(null=True)  # a stop's grace end for this running stage
    run_deadline = UnicodeAttribute(null=True)  # the run's timeoutSeconds deadline, while active
    # Written by the stream consumer when the attempt started (domain/overruns.py): JSON
    # {name: [p50 ms, p95 ms, samples]}, its overrun moment; and by its timer, when it overran.
    expectations = UnicodeAttribute(null=True)
    overrun_at = UnicodeAttribute(null=True)
    overrunning_at = UnicodeAttribute(null=True)
    active_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    # Set on the stage items of big runs: a pending intent on the run item may hold a newer
    # version of this stage, so ``get_stage`` reads the run item too (small runs: one GetItem).
    big_run = BooleanAttribute(null=True)
    # The run version whose write produced this item: a Query that reads a stage newer than the
    # run item it read first raced a writer and reads again (repository.load_run).
    run_version = NumberAttribute(null=True)
    # Its place in the stagesByPipeline index: pipeline, run counter * STAGE_SLOTS + position.
    listed_pipeline = UnicodeAttribute(null=True)
    listed_at = NumberAttribute(null=True)
    environment = UnicodeAttribute(null=True)
    # Its place in the approvalsWaiting index, only while it waits for approval.
    approval_feed = UnicodeAttribute(null=True)
    waiting_key = UnicodeAttribute(null=True)
    version = VersionAttribute()

    active = ActiveStages()
    by_pipeline = StagesByPipeline()
    waiting = ApprovalsWaiting()


class AttemptItem(BaseItem, discriminator="attempt"):
    """One ended attempt of a stage, written once with the change that ended it (the stage's
    retry), deleted with its stage or run; not versioned (it never changes)."""

    stage_id = UnicodeAttribute()
    attempt = NumberAttribute()
    record = UnicodeAttribute()  # JSON: the attempt as the API shows it (operations.new_attempt)


class TokenItem(BaseItem, discriminator="token"):
    """An API token, keyed by the SHA-256 of its secret (the secret itself is never stored); or
    an access key pair, keyed by its AK, holding its SK sealed (a signature check needs the SK).

    ``window``/``hits`` are its rate counter, updated by every request with the lookup itself
    (store/tokens.py), so authenticating costs one round trip."""

    token_id = UnicodeAttribute()
    name = UnicodeAttribute()
    scopes = UnicodeAttribute()  # JSON list
    pipelines = UnicodeAttribute(null=True)  # JSON list; absent: every pipeline
    created_at = UnicodeAttribute()
    window = NumberAttribute(default=0)
    hits = NumberAttribute(default=0)
    secret_key = UnicodeAttribute(null=True)  # access keys only: the SK, sealed (adapters/secretbox.py)


class TokenEntryItem(BaseItem, discriminator="token_entry"):
    """A token's entry in the admin listing (one partition, written and read only by admins)."""

    token_id = UnicodeAttribute()
    name = UnicodeAttribute()
    scopes = UnicodeAttribute()  # JSON list
    pipelines = UnicodeAttribute(null=True)  # JSON list
    created_at = UnicodeAttribute()
    created_by = UnicodeAttribute(null=True)
    token_hash = UnicodeAttribute(null=True)  # to delete the token item on revocation
    access_key = UnicodeAttribute(null=True)  # an access key pair's AK (its item's key) instead


class SessionItem(BaseItem, discriminator="session"):
    """A dashboard session (store/tokens.py), keyed by the SHA-256 of its id: it holds the
    SHA-256 of its token (never the token) and ends at ``expires_at`` (also the table's TTL)."""

    token_hash = UnicodeAttribute()
    csrf_token = UnicodeAttribute()
    expires_at = NumberAttribute()
    created_at = UnicodeAttribute()


class IdempotencyItem(BaseItem, discriminator="idempotency"):
    """One Idempotency-Key claim (store/idempotency.py); DynamoDB's TTL deletes it after 24 h."""

    state = UnicodeAttribute()  # PENDING while the first request runs, COMMITTED, DONE
    fingerprint = UnicodeAttribute()  # keyed hash of method, path and body
    token = UnicodeAttribute()  # who holds the claim
    lease_until = NumberAttribute()  # epoch seconds: a PENDING claim older than this is abandoned
    expires_at = NumberAttribute()  # epoch seconds, the table's TTL attribute
    status_code = NumberAttribute(null=True)
    headers = UnicodeAttribute(null=True)  # JSON
    body = BinaryAttribute(null=True, legacy_encoding=False)  # zlib-compressed response body
    effect = UnicodeAttribute(null=True)  # JSON: what the committed request wrote, e.g. {"run": id}


class SourceItem(BaseItem, discriminator="source"):
    """A webhook source (store/sources.py): its secret is sealed, never stored in clear."""

    name = UnicodeAttribute()
    source_type = UnicodeAttribute()
    secret = UnicodeAttribute()  # AES-GCM ciphertext (adapters/secretbox.py)
    created_at = UnicodeAttribute()
    created_by = UnicodeAttribute(null=True)


class LinkItem(BaseItem, discriminator="link"):
    """Which stagetrack run a sender's run became (written with the run, in its transaction)."""

    namespace = UnicodeAttribute()  # e.g. "github:<source name>", "aws.codepipeline"
    external_key = UnicodeAttribute()
    run_id = UnicodeAttribute()
    created_at = UnicodeAttribute()


class SubscriptionItem(BaseItem, discriminator="subscription"):
    subscription_id = UnicodeAttribute()
    url = UnicodeAttribute()
    events = UnicodeAttribute()  # JSON list
    pipelines = UnicodeAttribute(null=True)  # JSON list; absent: every pipeline
    statuses = UnicodeAttribute(null=True)  # JSON list; absent: every status
    secret = UnicodeAttribute()  # AES-GCM ciphertext
    description = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    created_by = UnicodeAttribute(null=True)
    payload_format = UnicodeAttribute(null=True)  # "stagetrack" | "cdevents"; absent: "stagetrack"


class DeliveryItem(BaseItem, discriminator="delivery"):
    """One attempt to deliver one event to one subscriber; DynamoDB's TTL removes it."""

    delivery_id = UnicodeAttribute()
    event_id = UnicodeAttribute()
    event_type = UnicodeAttribute()
    attempt = NumberAttribute()
    outcome = UnicodeAttribute()  # delivered | retrying | dead-lettered
    status_code = NumberAttribute(null=True)
    error = UnicodeAttribute(null=True)
    at = UnicodeAttribute()
    duration_ms = NumberAttribute(null=True)
    next_attempt_at = UnicodeAttribute(null=True)
    expires_at = NumberAttribute()


SCHEDULES_SHARD = "SCHEDULES"  # the activeStages partition of enabled schedules (store/schedules.py)


def schedules_pk(pipeline: str) -> str:
    return f"SCHEDULES#{pipeline}"


def schedule_sk(schedule_id: str) -> str:
    return f"SCHEDULE#{schedule_id}"


class ScheduleItem(BaseItem, discriminator="schedule"):
    """A pipeline's cron schedule (domain/schedules.py). While enabled it carries
    ``active_shard = SCHEDULES_SHARD`` and ``due_at`` = its next fire time, so it sits in the
    sparse activeStages index in a partition of its own: the minute tick reads the due ones with
    one Query (store/schedules.py), and the stage sweeps (ACTIVE#n) never see them."""

    schedule_id = UnicodeAttribute()
    pipeline = UnicodeAttribute()
    cron = UnicodeAttribute()
    time_zone = UnicodeAttribute()
    enabled = BooleanAttribute()
    variables = UnicodeAttribute(null=True)  # JSON
    description = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    created_by = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    last_fired_at = UnicodeAttribute(null=True)
    last_run_id = UnicodeAttribute(null=True)
    last_skipped = UnicodeAttribute(null=True)  # JSON
    active_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    version = VersionAttribute()


GROUPS_SHARD = "GROUPS"  # the activeStages partition of groups with waiting runs (store/groups.py)


def group_pk(pipeline: str) -> str:
    return f"GROUP#{pipeline}"


def group_sk(name: str) -> str:
    return f"GROUP#{name}"


class GroupItem(BaseItem, discriminator="group"):
    """A concurrency group of a pipeline (domain/concurrency.Group): the run holding it and the
    runs waiting for it, oldest first (JSON list). While runs wait it carries ``active_shard =
    GROUPS_SHARD`` and ``due_at`` (its latest change + a grace time), so the sweeper finds a group
    whose holder ended without releasing it (its writer died between the two) with one Query."""

    # attribute names of their own: ``pipeline`` and ``name`` key other items' indexes
    pipeline = UnicodeAttribute(attr_name="group_pipeline")
    name = UnicodeAttribute(attr_name="group_name")
    active = UnicodeAttribute(null=True)
    queue = UnicodeAttribute(null=True)  # JSON list of run ids
    updated_at = UnicodeAttribute(null=True)
    active_shard = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    version = VersionAttribute()


@dataclass(frozen=True)
class ItemModels:
    """Every item class, bound to one table and endpoint (``item_models``)."""

    table_name: str
    base: type[BaseItem]
    pipeline: type[PipelineItem]
    run: type[RunItem]
    stage: type[StageItem]
    attempt: type[AttemptItem]
    token: type[TokenItem]
    token_entry: type[TokenEntryItem]
    session: type[SessionItem]
    idempotency: type[IdempotencyItem]
    source: type[SourceItem]
    link: type[LinkItem]
    subscription: type[SubscriptionItem]
    delivery: type[DeliveryItem]
    schedule: type[ScheduleItem]
    group: type[GroupItem]

    def connection(self) -> Connection:
        """The low-level connection every class of this table shares."""
        return self.base._get_connection().connection


_Item = TypeVar("_Item", bound=BaseItem)
@dataclass(frozen=True)
class ClientLimits:
    """The botocore client's connect/read timeouts and retries (PynamoDB's Meta settings, which
    it turns into a botocore ``Config``: standard retry mode, 1 + ``max_retries`` attempts)."""

    connect_timeout_seconds: float = 1.0
    read_timeout_seconds: float = 2.0
    max_retries: int = 2


_bound: dict[tuple[str, str, str | None, ClientLimits], ItemModels] = {}
_binding = threading.Lock()


def item_models(table_name: str, region: str, host: str | None,
                limits: ClientLimits = ClientLimits()) -> ItemModels:
    """The item classes bound to this table and endpoint: made on first use, then the same ones
    (and the same botocore client) for every later caller in the process."""
    key = (table_name, region, host, limits)
    with _binding:
        if key not in _bound:
            _bound[key] = _bind(table_name, region, host, limits)
        return _bound[key]


def _bind(table_name: str, region: str, host: str | None,
          limits: ClientLimits = ClientLimits()) -> ItemModels:
    """A copy of the hierarchy: a base class with its own Meta and ``kind`` discriminator, and
    each item class as a subclass of (that base, its schema class) registered on it.

    PynamoDB gives each model class its own connection and so its own botocore client (about
    70 ms each to create); all classes of one table share one, so a Lambda cold start creates a
    single client."""
    meta = type("Meta", (), {"table_name": table_name, "region": region, "host": host,
                             "connect_timeout_seconds": limits.connect_timeout_seconds,
                             "read_timeout_seconds": limits.read_timeout_seconds,
                             "max_retry_attempts": limits.max_retries})
    base = cast("type[BaseItem]", MetaModel(
        "BaseItem", (BaseItem,), {"__module__": __name__, "_connection": None, "Meta": meta,
                                  "kind": DiscriminatorAttribute()}))

    def bound(schema: type[_Item]) -> type[_Item]:
        return cast("type[_Item]", MetaModel(
            schema.__name__, (base, schema), {"__module__": __name__, "_connection": None},
            discriminator=BaseItem.kind.get_discriminator(schema)))

    items = ItemModels(
        table_name=table_name, base=base, pipeline=bound(PipelineItem), run=bound(RunItem),
        stage=bound(StageItem), attempt=bound(AttemptItem), token=bound(TokenItem),
        token_entry=bound(TokenEntryItem), session=bound(SessionItem),
        idempotency=bound(IdempotencyItem), source=bound(SourceItem), link=bound(LinkItem),
        subscription=bound(SubscriptionItem), delivery=bound(DeliveryItem),
        schedule=bound(ScheduleItem), group=bound(GroupItem),
    )
    shared: Connection | None = None
    for model in (base, items.pipeline, items.run, items.stage, items.attempt, items.token, items.token_entry,
                  items.session, items.idempotency, items.source, items.link, items.subscription,
                  items.delivery, items.schedule):
        table_connection = model._get_connection()
        if shared is None:
            shared = table_connection.connection
        else:
            table_connection.connection = shared
    return items
