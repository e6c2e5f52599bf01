"""GET /openapi.json (OpenAPI 3.1) and GET /health — both public.

The document is built from the app's own route table, so a route cannot be missing from it:
every registered route appears with its path parameters, the scope it needs (from the route
helper's ``route_spec``) and the error responses the route helper can produce. Request bodies,
query parameters and response bodies come from pydantic models (``model_json_schema``): those
a route declared to ``route(body=..., query=..., response=...)``, else the table ``KNOWN``
below; a route documented by neither gets a generic JSON object body and response.

Public on purpose: the document describes the API, not its data (the same is in the README),
and clients and tools fetch it before they hold a token. /health answers without touching
DynamoDB, so it tells nothing but "the function runs".
"""
from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from chalice import Blueprint
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..domain import auth
from ..domain import schemas as request_models
from ..domain.status import StageStatus
from .responses import json_response
from .routing import declared_routes, route

routes = Blueprint(__name__)

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
Timestamp = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")]


class Out(BaseModel):
    """Responses may grow new fields, so documented shapes allow more than they list.

    Only the OpenAPI document uses these, so they are built when it is first asked for
    (``defer_build``), not on every cold start."""

    model_config = ConfigDict(extra="allow", defer_build=True)


class AttemptOut(Out):
    """One ended attempt of a stage (kept as its own record, read only when asked for)."""

    attempt: int
    status: StageStatus
    startedAt: Timestamp | None
    endedAt: Timestamp | None
    duration: float | None = Field(description="seconds")
    approvalDecision: dict[str, Any] | None = Field(
        description="its gate's approve/reject (decision, by, at, comment, attempt), or null")


class ApprovalPolicyOut(Out):
    approvers: list[str] = Field(description="token names and group:<name> references; empty: any "
                                             "operate token")
    groups: dict[str, list[str]] = Field(description="the token names of each group approvers name")
    required: int = Field(description="distinct approvals that open the gate (N of M)")
    preventSelfApproval: bool = Field(description="the run's actor (its creator) may not decide")
    onTimeout: str = Field(description="TIMED_OUT, FAILURE, APPROVE or REJECT when timeoutSeconds pass")
    remindAfterSeconds: int | None = Field(description="a stage.approval-reminder event this long "
                                                       "after it began to wait")


class RetryPolicyOut(Out):
    max: int = Field(description="automatic retries of the stage in its run (1-10)")
    when: list[Literal["FAILURE", "TIMED_OUT"]] = Field(description="the endings of an attempt that ran "
                                                                    "which are retried")
    backoffSeconds: int = Field(description="wait before the first retry; each next one waits twice "
                                            "as long, at most 3600 s")


class DecisionOut(Out):
    decision: str = Field(description="APPROVED or REJECTED")
    by: str
    at: Timestamp
    comment: str | None
    attempt: int


class AttemptListOut(Out):
    items: list[AttemptOut] = Field(description="newest first")
    nextCursor: str | None


class StageOut(Out):
    id: str
    createdAt: Timestamp
    updatedAt: Timestamp
    type: str
    startedAt: Timestamp | None
    endedAt: Timestamp | None
    duration: float | None = Field(description="seconds; live while IN_PROGRESS, null before it started")
    status: StageStatus
    runId: str
    name: str
    position: int
    approval: str
    timeoutSeconds: int | None
    attempt: int = Field(description="the current attempt's number (GoCD's stage counter)")
    attemptCount: int = Field(description="attempts of this stage so far, the current one included")
    attempts: list[AttemptOut] | None = Field(
        None, description="only with ?include=attempts: the ended attempts, oldest first")
    expectedSeconds: int | None = Field(description="how long the run driver lets it run (autoAdvance)")
    timesOutAt: Timestamp | None = Field(description="when its timeout (or its run's deadline) falls, "
                                                     "while active")
    approvalDecision: dict[str, Any] | None = Field(
        description="this attempt's approve/reject: decision, by, at, comment, attempt")
    approvalPolicy: ApprovalPolicyOut | None = Field(
        description="a MANUAL stage's approval policy (approvers, required N of M, ...), or null")
    approvals: list[DecisionOut] = Field(
        description="every approve/reject of this attempt, in order (who, when, comment)")
    allowFailure: bool = Field(description="the sender lets it fail without failing the run (GitLab "
                                           "allow_failure): a FAILURE here counts as passed for the run")
    environment: str | None = Field(description="where it deploys; DEPLOY_PROD: production, "
                                                "DEPLOY_STAGING: staging unless set; else null")
    retry: RetryPolicyOut | None = Field(description="its automatic retry policy, or null")
    autoRetries: int = Field(description="automatic retries it has had in this run")
    nextRetryAt: Timestamp | None = Field(description="while RETRY_PENDING: when its timer starts the "
                                                      "attempt; else null")
    retryReason: Literal["FAILURE", "TIMED_OUT"] | None = Field(
        description="while RETRY_PENDING: how the attempt before it ended; else null")
    always: bool = Field(description="a finally stage: still runs after a failure, a stop or a cancel")
    cancelsAt: Timestamp | None = Field(description="while active after a graceful stop: when its grace "
                                                    "period ends and the timer cancels it")
    runDeadline: Timestamp | None = Field(description="while active: when the run's timeoutSeconds, "
                                                      "counted from its first start, times it out")
    typicalSeconds: float | None = Field(
        description="its recent p50 duration (its pipeline's last 14 UTC days, at least 5 finished "
                    "attempts of its name; null: unknown), known once a stage of the run started")
    overrunningAt: Timestamp | None = Field(
        description="when this attempt passed its recent p95 (a stage.overrunning event); null: it did not")
    version: int | None


class StopRecordOut(Out):
    mode: Literal["STOP", "CANCEL"] = Field(description="STOP: graceful (running stages may finish); "
                                                        "CANCEL: immediate")
    by: str
    at: Timestamp
    reason: str | None
    graceSeconds: int | None = Field(None, description="STOP only: the grace period")
    graceUntil: Timestamp | None = Field(None, description="STOP only: when the timers cancel what "
                                                           "still runs")


class StoppingOut(StopRecordOut):
    after: StopRecordOut | None = Field(None, description="a cancel of a stopping run: the stop it "
                                                          "followed")


class CancellationOut(Out):
    by: str | None = None
    at: Timestamp | None = None
    reason: str | None = None
    stageId: str | None = Field(None, description="the stage cancelled; null for a run cancel or stop")


class RunSummaryOut(Out):
    id: str
    pipeline: str
    counter: int
    status: StageStatus
    createdAt: Timestamp
    updatedAt: Timestamp
    startedAt: Timestamp | None
    endedAt: Timestamp | None
    duration: float | None
    commit: dict[str, Any] | None = Field(description="hash, message, committer, committedAt (null: unknown)")
    trigger: str | None
    branch: str | None
    actor: str | None = Field(description="who created it: the token's name, or the sender's user")
    sourceUrl: str | None = Field(description="the run in the system it came from")
    source: Literal["native", "github", "gitlab", "cdevents", "codepipeline", "codebuild", "buddy", "gocd",
                    "codearts"] | None
    environment: str | None
    variables: dict[str, str] = Field(description="secret values show as ******")
    secretVariables: list[str]
    timeoutSeconds: int | None
    autoAdvance: bool
    cancellation: CancellationOut | None = Field(description="the latest cancel or stop: by, at, reason, "
                                                             "stageId; force: true after a force-cancel")
    stopping: StoppingOut | None = Field(
        description="set by a stop or cancel until a retry: mode (STOP or CANCEL), by, at, reason, "
                    "graceSeconds and graceUntil (STOP), force (a force-cancel); the run is CANCELLING "
                    "while a stage is active")
    stopGraceSeconds: int | None = Field(description="a stop's grace period unless the stop sets one "
                                                     "(null: the default, 600)")
    version: int | None


class QueueOut(Out):
    group: str = Field(description="the concurrency group it waits in")
    holder: str | None = Field(description="the run holding the group (null: none, being promoted)")
    position: int = Field(description="its place in the queue: 1 is the next run to start (first "
                                      "come, first served)")
    waiting: int = Field(description="how many runs wait in the group")


class RunOut(RunSummaryOut):
    concurrencyGroup: str | None = Field(description="its concurrency group (null: none); while it "
                                                     "waits there its status is QUEUED")
    eta: Timestamp | None = Field(
        description="when it should end: now + the typicalSeconds left of its unfinished stages (a "
                    "running one's less its elapsed time); null when it is final or stopping, or one "
                    "of them has no typicalSeconds. Not in listings")
    queue: QueueOut | None = Field(None, description="GET /api/runs/{id} of a QUEUED run only (absent "
                                                     "otherwise): its place in its group's queue")
    stages: list[StageOut]


class RunListOut(Out):
    items: list[RunSummaryOut]
    nextCursor: str | None


class RecentStageOut(Out):
    name: str
    status: StageStatus


class RecentRunOut(Out):
    id: str
    counter: int
    status: StageStatus
    createdAt: Timestamp
    branch: str | None
    stages: list[RecentStageOut] = Field(description="in pipeline order")


class PipelineOverviewOut(Out):
    name: str
    paused: bool
    lastActivityAt: Timestamp | None = Field(description="when its latest run was created")
    runCount: int = Field(description="run numbers claimed so far (its latest run's counter)")
    recentRuns: list[RecentRunOut] = Field(description="newest first, at most ?runs= (default 5)")


class PipelineListOut(Out):
    items: list[PipelineOverviewOut] = Field(description="most recently active first")
    nextCursor: str | None


class ApprovalRunOut(Out):
    id: str
    pipeline: str
    counter: int
    branch: str | None
    actor: str | None


class ApprovalOut(Out):
    stage: StageOut
    run: ApprovalRunOut
    waitingSince: Timestamp


class ApprovalListOut(Out):
    items: list[ApprovalOut] = Field(description="waiting longest first")
    nextCursor: str | None


class ConcurrencyOut(Out):
    mode: Literal["PARALLEL", "QUEUED", "SUPERSEDED"] = Field(
        description="PARALLEL: runs overlap; QUEUED: a new run waits (status QUEUED) while its group "
                    "holds an active run; SUPERSEDED: a new run cancels the group's active run")
    group: str | None = Field(description="the default group (null: the pipeline's name)")
    queue: Literal["ALL", "NEWEST"] = Field(
        description="which runs wait (QUEUED, and a PARALLEL pipeline's runs that name a group): ALL "
                    "keeps every one, oldest first (at most 50); NEWEST keeps only the newest: a new "
                    "waiting run cancels the one waiting (reason 'replaced by run <id>')")


class PipelineStatusOut(Out):
    name: str
    paused: bool
    pausedCause: str | None
    pausedBy: str | None
    pausedAt: Timestamp | None
    locked: bool = Field(description="a run holds the default concurrency group (GoCD's lock)")
    lockedBy: str | None = Field(description="the run holding it (null: not locked)")
    schedulable: bool
    concurrency: ConcurrencyOut
    codeartsJobId: str = Field(description="job_id of this pipeline in the CodeArts endpoint")
    buddyPipelineId: int = Field(description="pipeline_id of this pipeline in the Buddy endpoint")


class TokenOut(Out):
    id: str
    kind: Literal["token", "access-key"]
    name: str
    scopes: list[Literal["read", "operate", "admin"]]
    pipelines: list[str] | None = Field(description="null: every pipeline")
    createdAt: Timestamp
    createdBy: str | None
    accessKey: Annotated[str, StringConstraints(pattern=r"^STAK[A-Z2-7]{16}$")] | None = Field(
        None, description="access keys only: the AK, sent in the clear with every signed request")


class TokenCreatedOut(TokenOut):
    token: Annotated[str, StringConstraints(pattern=r"^st_[A-Za-z0-9_-]{43}$")] | None = Field(
        None, description="tokens: the secret, shown in this response only, stored only as its SHA-256")
    secretKey: Annotated[str, StringConstraints(pattern=r"^st_sk_[A-Za-z0-9_-]{43}$")] | None = Field(
        None, description="access keys: the SK, shown in this response only, stored only sealed")


class TokenListOut(Out):
    items: list[TokenOut]


class ErrorDetailOut(Out):
    code: str
    message: str
    details: Any = None


class ErrorOut(Out):
    error: ErrorDetailOut


class HealthOut(Out):
    status: Literal["ok"]


class StagesQuery(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built on its first request

    runId: Annotated[str, StringConstraints(min_length=1)]


StageListOut = {"type": "array", "items": {"$ref": "#/components/schemas/StageOut"}}


def _model(name: str):
    """A request model by name, if it exists (other modules' models come and go)."""
    return getattr(request_models, name, None)


# (method, path) -> documentation for routes declared without it.
KNOWN: dict[tuple[str, str], dict] = {
    ("POST", "/api/runs"): {"body": "CreateRunIn", "response": RunOut, "status": 201},
    ("GET", "/api/runs"): {"query": "SearchRunsQuery", "response": RunListOut},
    ("GET", "/api/pipelines"): {"query": "PipelinesQuery", "response": PipelineListOut},
    ("GET", "/api/approvals"): {"query": "ApprovalsQuery", "response": ApprovalListOut},
    ("GET", "/api/runs/{run_id}"): {"query": "IncludeQuery", "response": RunOut},
    ("DELETE", "/api/runs/{run_id}"): {"response": RunOut},
    ("GET", "/api/stages"): {"query": StagesQuery, "response": StageListOut},
    ("GET", "/api/stages/{stage_id}"): {"query": "IncludeQuery", "response": StageOut},
    ("GET", "/api/stages/{stage_id}/attempts"): {"query": "AttemptsQuery", "response": AttemptListOut},
    ("PATCH", "/api/stages/{stage_id}"): {"body": "PatchStageIn", "response": StageOut},
    ("DELETE", "/api/stages/{stage_id}"): {"response": StageOut},
    ("POST", "/api/insights/rebuild"): {"optional": True},  # no body, or {} (the route's spec has the rest)
    ("POST", "/api/runs/{run_id}/cancel"): {"body": "CancelRunIn", "optional": True, "response": RunOut,
                                           "summary": "Cancel a run now (active stages CANCELLED, the rest "
                                                      "SKIPPED; finally stages still run unless force)"},
    ("POST", "/api/stages/{stage_id}/cancel"): {"body": "CancelIn", "optional": True, "response": StageOut,
                                               "summary": "Cancel a stage (a pending automatic retry too)"},
    ("POST", "/api/pipelines/{pipeline}/runs/{counter}/stop"): {
        "body": "StopIn",
        "optional": True,
        "response": RunOut,
        "summary": "Stop a run gracefully: running stages may finish within graceSeconds (CANCELLING), "
                   "nothing new starts but finally stages",
    },
    ("POST", "/api/runs/{run_id}/retry"): {"body": "RetryRunIn", "optional": True, "response": RunOut,
                                          "summary": "Retry a run's failed (or ALL) stages as new attempts"},
    ("POST", "/api/stages/{stage_id}/retry"): {"body": "EmptyIn", "optional": True, "response": StageOut,
                                              "summary": "Retry a stage (takes a pending automatic retry "
                                                         "at once)"},
    ("POST", "/api/stages/{stage_id}/approve"): {
        "body": "DecisionIn",
        "optional": True,
        "response": StageOut,
        "summary": "Approve a gate (its approval policy: 403 not_an_approver, 409 already_decided)",
    },
    ("POST", "/api/stages/{stage_id}/reject"): {
        "body": "DecisionIn",
        "optional": True,
        "response": StageOut,
        "summary": "Reject a gate: it fails (its approval policy: 403 not_an_approver)",
    },
    ("PUT", "/api/runs/{run_id}/variables"): {"body": "ApplyVariablesIn", "response": RunOut},
    ("GET", "/api/pipelines/{pipeline}/status"): {"response": PipelineStatusOut},
    ("POST", "/api/pipelines/{pipeline}/pause"): {
        "body": "PauseIn",
        "optional": True,
        "response": PipelineStatusOut,
    },
    ("POST", "/api/pipelines/{pipeline}/unpause"): {
        "body": "EmptyIn",
        "optional": True,
        "response": PipelineStatusOut,
    },
    ("PUT", "/api/pipelines/{pipeline}/concurrency"): {
        "body": "ConcurrencyIn",
        "response": PipelineStatusOut,
        "summary": "Set the pipeline's concurrency mode (PARALLEL, QUEUED, SUPERSEDED) and default group",
    },
    ("POST", "/api/pipelines/{pipeline}/schedule"): {
        "body": "ScheduleIn",
        "optional": True,
        "response": RunOut,
        "status": 202,
    },
}

PATH_EXAMPLES = {"pipeline": "web", "pipeline_name": "web", "run_id": "web:1", "stage_id": "web:1:1",
                 "counter": "1", "schedule_id": "sch_0123456789abcdef0123"}
RUN_LINKS = {"run_id": "$response.body#/id", "stage_id": "$response.body#/stages/0/id",
             "pipeline": "$response.body#/pipeline", "counter": "$response.body#/counter"}
# What a model's validators check beyond its JSON schema, stated in the document.
REFINEMENTS = {"PatchStageIn": {"minProperties": 1}, "PatchScheduleIn": {"minProperties": 1}}

ERROR_STATUSES = {
    400: "malformed request (JSON, query or header)",
    401: "missing, unreadable, unknown or revoked credentials (or signature, on webhooks)",
    403: "the token lacks the scope, or is limited to pipelines and this names none (approve/reject: "
         "not_an_approver, the gate's approval policy does not let this token decide)",
    404: "not found (also: a pipeline the token is not limited to)",
    409: "conflict: illegal transition, concurrent change, paused pipeline, a run waiting in or a full "
         "concurrency group (run_queued, concurrency_queue_full, concurrency_group_busy)",
    413: "request body too large",
    422: "the body fails validation (details name the fields)",
    429: "rate limit exceeded (Retry-After)",
}
UNSUPPORTED_MEDIA_TYPE = "the request body is not application/json"
# Public routes take no token, but those that verify a signature of their own (webhooks) answer
# 401 for a bad one; none of them is rate-limited per token.
PUBLIC_ERRORS = (400, 401, 404, 409, 413, 422)
RATE_HEADERS = {
    "X-Rate-Limit-Limit": {"description": "requests allowed per minute for this token",
                           "schema": {"type": "integer"}},
    "X-Rate-Limit-Remaining": {"description": "requests left in this minute", "schema": {"type": "integer"}},
    "X-Request-Id": {"description": "the request id, as logged", "schema": {"type": "string"}},
}


@route(routes, "/openapi.json", methods=["GET"], scope="public",
       summary="This document (OpenAPI 3.1)")
def openapi_document():
    return json_response(build_document(routes.current_app))


@route(routes, "/health", methods=["GET"], scope="public", response=HealthOut,
       summary="Liveness: the function runs (reads nothing)")
def health():
    return json_response({"status": "ok"})


def build_document(app) -> dict:
    """The declared routes only: a GET's HEAD and the fallbacks (api/fallbacks.py) are not
    operations of their own."""
    return _build(tuple((path, method, app.routes[path][method].view_function)
                        for path, method in declared_routes(app)))


@functools.lru_cache(maxsize=4)
def _build(views: tuple) -> dict:
    components: dict[str, dict] = {}
    paths: dict[str, dict] = {}
    for path, method, view in views:
        spec = getattr(view, "route_spec", None)
        paths.setdefault(path, {})[method.lower()] = _operation(path, method, spec, components)
    _links(views, paths)
    for name, extra in REFINEMENTS.items():
        if name in components:
            components[name].update(extra)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "stagetrack",
            "version": API_VERSION,
            "description": "CI/CD runs and stages. Authenticate with Authorization: Bearer <token>, "
                           "Basic auth (any user, the token as password) or X-Auth-Token.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic",
                          "description": "user:token; the user is recorded as the actor"},
                "authToken": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
            },
        },
    }


def _schema(model, components: dict) -> dict:
    """A model's JSON schema as a $ref, its definitions moved into components."""
    if isinstance(model, dict):
        if model.get("items", {}).get("$ref", "").endswith("/StageOut"):
            _schema(StageOut, components)
        return model
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}",
                                     mode="serialization" if issubclass(model, Out) else "validation")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _doc(path: str, method: str, spec) -> dict:
    doc = dict(KNOWN.get((method, path), {}))
    if spec is not None:
        for key in ("body", "query", "response", "status", "summary"):
            if getattr(spec, key) is not None:
                doc[key] = getattr(spec, key)
    for key in ("body", "query"):
        if isinstance(doc.get(key), str):
            doc[key] = _model(doc[key])
    return doc


def _operation(path: str, method: str, spec, components: dict) -> dict:
    doc = _doc(path, method, spec)
    scope = spec.scope if spec is not None else auth.required_scope(method, path)
    public = scope == auth.PUBLIC
    words = path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    operation: dict = {
        "operationId": f"{method.lower()}_{words}" or method.lower(),
        "summary": doc.get("summary") or f"{method} {path}",
        "x-scope": scope,
        "parameters": [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1},
                **({"example": PATH_EXAMPLES[name]} if name in PATH_EXAMPLES else {}),
            }
            for name in _path_params(path)
        ],
    }
    query = doc.get("query")
    if query is not None:
        schema = query.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        for name, prop in schema.get("properties", {}).items():
            prop.pop("title", None)
            prop.pop("default", None)
            if "anyOf" in prop:  # optional query parameters: absent, never null
                options = [p for p in prop.pop("anyOf") if p.get("type") != "null"]
                prop.update(options[0] if len(options) == 1 else {"anyOf": options})
            operation["parameters"].append(
                {"name": name, "in": "query", "required": name in schema.get("required", []), "schema": prop})
    if method in ("POST", "PUT", "PATCH"):
        body = doc.get("body")
        body_schema = _schema(body, components) if body is not None else {"type": "object"}
        operation["requestBody"] = {
            "required": not doc.get("optional", body is None),
            "content": {"application/json": {"schema": body_schema}},
        }
    if not public:
        operation["security"] = [{"bearer": []}, {"basic": []}, {"authToken": []}]
    response = doc.get("response")
    success = str(doc.get("status") or 200)
    error_ref = _schema(ErrorOut, components)
    responses: dict = {success: {
        "description": "success",
        "headers": {} if public else RATE_HEADERS,
        "content": {"application/json": {"schema": _schema(response, components) if response is not None
                                         else {}}},
    }}
    for code in (PUBLIC_ERRORS if public else ERROR_STATUSES):
        responses[str(code)] = {"description": ERROR_STATUSES[code],
                                "content": {"application/json": {"schema": error_ref}}}
    if "requestBody" in operation:
        responses["415"] = {"description": UNSUPPORTED_MEDIA_TYPE,
                            "content": {"application/json": {"schema": error_ref}}}
    operation["responses"] = responses
    overrides = getattr(spec, "openapi", None) or {}  # a dialect's own wire format (route(openapi=))
    for key, value in overrides.items():
        if key == "parameters":  # replaces the generic parameter of the same name, adds the others
            named = {(p["name"], p["in"]) for p in value}
            value = [p for p in operation["parameters"] if (p["name"], p["in"]) not in named] + list(value)
        operation[key] = value
    return operation


def _links(views: tuple, paths: dict) -> None:
    """Links from a created run to every operation addressed by its ids (for clients and for
    schemathesis' stateful phase)."""
    created = paths.get("/api/runs", {}).get("post")
    if created is None:
        return
    links = {}
    for path, method, _view in views:
        params = _path_params(path)
        if params and set(params) <= set(RUN_LINKS):
            operation = paths[path][method.lower()]
            links[operation["operationId"]] = {
                "operationId": operation["operationId"],
                "parameters": {name: RUN_LINKS[name] for name in params},
            }
    success = next(code for code in created["responses"] if code.startswith("2"))
    created["responses"][success]["links"] = links


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
