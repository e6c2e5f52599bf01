"""The outside systems stagetrack speaks to, registered in one list: ``INTEGRATIONS``.

Each integration is one module of this package that owns that system's wire format: its payload
models, parsing into domain updates (``domain.events.ExternalUpdate``), its signature or token
check, and the request headers that carry its credentials. This file only lists them, with what
the entry points need before a payload arrives:

- ``api/webhooks.py`` serves one ``POST`` route per webhook integration (``webhook``: path,
  summary, media types) and calls the module's ``verify`` then ``receive``;
- ``events/inbound.py`` subscribes its EventBridge rule to every event integration's
  ``event_pattern``; ``service/ingest.py`` hands an event to the module's ``parse``;
- ``logging_setup.py`` scrubs the value of every header in any integration's
  ``redact_headers`` from every log line.

Kept cheap on purpose: ``logging_setup`` (so every module) imports this file, and an
integration module builds its pydantic models when it is imported. So an entry names its module
and the module is imported on the first call of ``verify``/``receive``/``parse`` (``Lazy``): a
cold start that never receives a payload does not pay for them.

Adding a webhook source: write ``chalicelib/integrations/<name>.py`` (``verify``, ``receive``)
and add its line below; see docs/integrations.md.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # for the annotations only: importing the domain here would cost every cold start
    from ..domain.events import ExternalUpdate, Ignored
    from ..domain.insights import SignalReceived

WEBHOOK: Literal["webhook"] = "webhook"  # an HTTP route the sender POSTs to, verified per source
EVENT: Literal["event"] = "event"  # an EventBridge event (AWS's own services), trusted by IAM
OUTBOUND: Literal["outbound"] = "outbound"  # what we send (signed subscriber deliveries)
Kind = Literal["webhook", "event", "outbound"]

# The media types of a webhook body most senders use (JSON, GitHub's form-encoded payload=, and
# text / octet-stream that reach the view, which answers in the sender's terms, not a bare 415).
COMMON_WEBHOOK_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain",
                        "application/octet-stream")


@dataclass(frozen=True)
class Lazy:
    """A function of an integration module, imported on its first call."""

    module: str
    function: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.function)(*args, **kwargs)


@dataclass(frozen=True)
class WebhookRoute:
    path: str  # POST <path>?source=<name>
    summary: str  # for /openapi.json
    content_types: tuple[str, ...] = COMMON_WEBHOOK_TYPES


@dataclass(frozen=True)
class Received:
    """A verified webhook request, parsed: what to apply, once per ``delivery_id``.
    ``fingerprint``: the bytes a replay of the same delivery must carry (usually the raw body)."""

    update: ExternalUpdate | Ignored | SignalReceived  # SignalReceived: an incident or a rollback (CDEvents)
    delivery_id: str
    fingerprint: bytes


@dataclass(frozen=True)
class Reply:
    """A verified webhook request answered at once, applying nothing (GitHub's ping)."""

    body: dict
    status: int = 200


@dataclass(frozen=True)
class Integration:
    name: str  # the source type of a webhook (``POST /api/sources {"type": name}``)
    kind: Kind
    module: str  # the module under chalicelib/integrations/ owning its wire format
    redact_headers: tuple[str, ...] = ()  # lower-case header names whose values are credentials
    webhook: WebhookRoute | None = None
    event_pattern: Mapping[str, list[str]] | None = None  # EventBridge rule pattern (kind event)
    refusal: str = "the request's signature or token is missing or wrong"  # the 403 message
    _qualified: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_qualified", f"{__name__}.{self.module}")

    @property
    def verify(self) -> Callable[[str, Mapping[str, str], bytes], bool]:
        """``verify(secret, headers, raw_body)``: is this request signed with the source's secret?"""
        return Lazy(self._qualified, "verify")

    @property
    def receive(self) -> Callable[[Mapping[str, str], bytes, str], Received | Reply]:
        """``receive(headers, raw_body, source_name)``: a verified request, parsed."""
        return Lazy(self._qualified, "receive")

    @property
    def parse(self) -> Callable[[dict], ExternalUpdate | Ignored]:
        """``parse(event)`` (kind event): ExternalUpdate | Ignored."""
        return Lazy(self._qualified, "parse")


INTEGRATIONS: list[Integration] = [
    Integration(
        name="github", kind=WEBHOOK, module="github", redact_headers=("x-hub-signature-256",),
        webhook=WebhookRoute("/api/webhooks/github",
                             "GitHub Actions workflow_run / workflow_job (X-Hub-Signature-256)"),
        refusal="X-Hub-Signature-256 is missing or does not match this source's secret",
    ),
    Integration(
        name="gitlab", kind=WEBHOOK, module="gitlab", redact_headers=("x-gitlab-token",),
        webhook=WebhookRoute("/api/webhooks/gitlab", "GitLab Pipeline Hook / Job Hook (X-Gitlab-Token)"),
        refusal="X-Gitlab-Token is missing or is not this source's secret token",
    ),
    Integration(
        name="cdevents", kind=WEBHOOK, module="cdevents", redact_headers=("authorization",),
        webhook=WebhookRoute(
            "/api/webhooks/cdevents", "CDEvents over the CloudEvents HTTP binding (Authorization: Bearer)",
            (*COMMON_WEBHOOK_TYPES, "application/cloudevents+json", "application/cloudevents-batch+json"),
        ),
        refusal="send Authorization: Bearer <this source's secret>",
    ),
    Integration(
        name="aws", kind=EVENT, module="aws",
        event_pattern={
            "source": ["aws.codepipeline", "aws.codebuild"],
            "detail-type": ["CodePipeline Pipeline Execution State Change",
                            "CodePipeline Stage Execution State Change",
                            "CodePipeline Action Execution State Change",
                            "CodeBuild Build State Change"],
        },
    ),
    Integration(
        name="signed-delivery", kind=OUTBOUND, module="signed_delivery",
        redact_headers=("x-stagetrack-signature",),
    ),
]


def of_kind(kind: Kind) -> list[Integration]:
    return [integration for integration in INTEGRATIONS if integration.kind == kind]


def webhook(name: str) -> Integration | None:
    """The webhook integration a source type names."""
    return next((i for i in of_kind(WEBHOOK) if i.name == name), None)


def webhook_names() -> tuple[str, ...]:
    """The source types ``POST /api/sources`` accepts, in registry order."""
    return tuple(integration.name for integration in of_kind(WEBHOOK))


def webhook_content_types() -> list[str]:
    """Every media type some webhook takes, in registry order: the one list the webhook routes
    accept (each view answers a type it cannot read in its sender's terms)."""
    types: list[str] = []
    for integration in of_kind(WEBHOOK):
        assert integration.webhook is not None, f"webhook integration {integration.name} needs its route"
        types += [t for t in integration.webhook.content_types if t not in types]
    return types


def for_event(event: Mapping[str, Any]) -> Integration | None:
    """The event integration whose rule pattern names this event's ``source``."""
    source = event.get("source")
    return next((i for i in of_kind(EVENT) if i.event_pattern and source in i.event_pattern["source"]), None)


def event_pattern() -> dict[str, list[str]]:
    """The one EventBridge rule pattern of every event integration."""
    pattern: dict[str, list[str]] = {"source": [], "detail-type": []}
    for integration in of_kind(EVENT):
        for key, values in (integration.event_pattern or {}).items():
            pattern.setdefault(key, []).extend(v for v in values if v not in pattern[key])
    return pattern


def redact_headers() -> tuple[str, ...]:
    """Every header any integration says carries a credential (lower case, no duplicates)."""
    names: list[str] = []
    for integration in INTEGRATIONS:
        names += [h.lower() for h in integration.redact_headers if h.lower() not in names]
    return tuple(names)
