"""Process settings, read once from the environment with working local defaults.

A value that is set but wrong stops the process at start-up with a message naming the variable
and what it accepts (``SettingsError``), rather than being read as a default or failing later
deep inside a request: ``STAGETRACK_LOCAL_TICKER must be true or false, got 'maybe'``.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{3,255}")  # DynamoDB's rule for table names


class SettingsError(ValueError):
    """A setting from the environment is not one of the values it accepts."""


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")


def env_bool(env, name: str, default: bool) -> bool:
    """true/false in any case (also 1/0, yes/no, on/off); unset or empty: the default."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(f"{name} must be true or false (also 1/0, yes/no, on/off), got {_shown(raw)}")


def env_int(env, name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise SettingsError(f"{name} must be a whole number from {low} to {high}, got {_shown(raw)}")
    return value


def env_float(env, name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise SettingsError(f"{name} must be a number of seconds from {low:g} to {high:g}, got {_shown(raw)}")
    return value


def env_table(env, name: str, default: str) -> str:
    raw = env.get(name)
    if raw is None:
        return default
    if not _TABLE_NAME.fullmatch(raw):
        raise SettingsError(f"{name} must be a DynamoDB table name: 3 to 255 of A-Z a-z 0-9 _ . -, "
                            f"got {_shown(raw)}")
    return raw


# A webhook body is never accepted past this, whatever the environment says: a Lambda's
# synchronous event is at most 6 MB, and the body travels in it escaped.
WEBHOOK_BODY_CEILING = 4 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    table_name: str = "stagetrack"
    region: str = "us-east-1"
    dynamodb_endpoint: str | None = None
    # The DynamoDB client's limits (store/models.py), sized so that a stalled call fails inside
    # the API function's 25 s (API Gateway gives up at 29 s): see ``dynamodb_call_budget`` and
    # docs/deploy.md "Timeout budget". botocore's defaults are 60 s/60 s, PynamoDB's 15 s/30 s.
    dynamodb_connect_timeout_seconds: float = 1.0
    dynamodb_read_timeout_seconds: float = 2.0
    dynamodb_max_retries: int = 2  # retries after the first attempt (3 attempts in all)
    # With an endpoint (DynamoDB Local under `make run` and the tests): no API Gateway 29 s to fit
    # in, and a JVM on a loaded 2-core machine (a CI box running the suite) stalls past 2 s now
    # and then; a read timeout there would fail a write that was about to succeed.
    LOCAL_CONNECT_TIMEOUT_SECONDS = 5.0
    LOCAL_READ_TIMEOUT_SECONDS = 30.0
    max_body_bytes: int = 64 * 1024
    # Webhook routes only: a GitLab Pipeline Hook lists every job (about 0.7-1 KB each), so a
    # 256-job pipeline sends ~250 KB and a 500-job one ~500 KB. API Gateway takes 10 MB and a
    # synchronous Lambda event 6 MB; 2 MiB leaves room for JSON escaping in the event.
    webhook_max_body_bytes: int = 2 * 1024 * 1024
    local_ticker: bool = False
    # A stage timer due within this many seconds of the write that set it is waited on by a
    # Step Functions execution (fires within seconds); a later one is left to the minute sweeper
    # (fires within a minute). 0: the sweeper fires every timer. Bounds the open executions to
    # the timers armed in one horizon (docs/deploy.md "Timers at scale").
    timer_horizon_seconds: int = 3600
    # Days a finished run (and its stages and ended attempts) is kept after it ended; then the
    # table's TTL removes it (service/retention.py). 0: kept forever. docs/deploy.md "Retention".
    run_retention_days: int = 400
    ticker_interval_seconds: float = 1.0
    # Key of the HMAC that secret variables are kept as (never their value). The default is for
    # local use only: set STAGETRACK_SECRET_PEPPER to a long random value in every deployment.
    secret_pepper: str = "stagetrack-local-pepper"

    # Bootstrap admin token (service/tokens.py). The default is for local use only; it is
    # logged as a warning when used against real DynamoDB. Not in repr, so never logged.
    admin_token: str = field(default="stagetrack-local-admin", repr=False)
    # Requests per token per minute (X-Rate-Limit-*, 429 past it).
    rate_limit_per_minute: int = 600

    # ---- integrations (issue 6: webhooks in, events out; see README "Integrations") ----
    # Key that webhook source and subscription secrets are encrypted with (AES-GCM): they are
    # needed in clear to sign and verify, so they are sealed, never hashed. The default is for
    # local use only; in AWS set STAGETRACK_SECRET_KEY from a SecureString parameter. Keys
    # replaced by a rotation stay readable while listed in STAGETRACK_PREVIOUS_SECRET_KEYS.
    secret_key: str = field(default="stagetrack-local-secret-key", repr=False)
    previous_secret_keys: tuple[str, ...] = field(default=(), repr=False)
    event_bus: str | None = None  # EventBridge bus name or ARN; None: do not publish
    delivery_queue_url: str | None = None  # SQS queue of subscriber deliveries (and retries)
    delivery_dlq_url: str | None = None  # where deliveries go after their last attempt
    ingest_dlq_url: str | None = None  # where unusable SQS/SNS/EventBridge messages go
    # The function `POST /api/insights/rebuild` invokes asynchronously (infra/part_insights.py);
    # None (`make run`, tests): the rebuild runs in a thread of this process.
    insights_rebuild_function: str | None = None
    delivery_max_attempts: int = 8
    delivery_timeout_seconds: float = 5.0
    # Subscribers at http://127.0.0.1 / localhost (and other private addresses) are refused
    # unless this is set: it is for `make run` and tests, never for a deployment.
    allow_local_subscribers: bool = False
    # Public base URL of this API (e.g. https://ci.example.com/prod): the ``url`` of runs and
    # stages in outgoing CDEvents. None: those URLs are origin-relative (``/api/runs/<id>``).
    public_url: str | None = None
    # CloudWatch namespace of the service's counts (adapters/metrics.py, embedded metric format
    # lines on stdout); None: no metric lines (`make run`, tests). The template sets
    # Stagetrack/<stack>.
    metrics_namespace: str | None = None
    # Secrets Manager secrets (ids or ARNs) the secrets above are read from, once per container
    # (adapters/secrets.py, called by the wiring): the deployed stack sets only these ids, never
    # a secret value, in a function's environment. Empty: the values above (env or local default).
    secret_ids: tuple[str, ...] = ()
    # EventBridge Scheduler (infra/part_schedules.py): the schedule group a stagetrack schedule's
    # wake-ups live in, the firing function they invoke, the role they invoke it with and their
    # dead-letter queue. No group (`make run`, tests): the minute tick fires every schedule.
    schedule_group: str | None = None
    schedule_target_arn: str | None = None
    schedule_role_arn: str | None = None
    schedule_dlq_arn: str | None = None
    # The insights' OpenTelemetry export (events/insights_export.py, docs/otel.md): the OTLP/HTTP
    # metrics URL (None: the export is off) and its headers (``name=value,...``: a collector's
    # API key, so read from a secret in the stack, field ``otlp_headers``; never logged).
    otlp_endpoint: str | None = None
    otlp_headers: str = field(default="", repr=False)

    def dynamodb_call_budget(self) -> float:
        """Seconds one DynamoDB call may take at worst before it fails: every attempt stalls for
        its connect and read timeouts, and botocore's standard retry mode waits before each retry
        at most 2**(n-1) s (throttling backoff, base 1 s; 0.025 s scale otherwise)."""
        attempts = 1 + self.dynamodb_max_retries
        stalls = attempts * (self.dynamodb_connect_timeout_seconds + self.dynamodb_read_timeout_seconds)
        backoff = sum(min(2.0 ** n, 20.0) for n in range(self.dynamodb_max_retries))
        return stalls + backoff

    @classmethod
    def on_local(cls, endpoint: str, **fields: object) -> Settings:
        """Settings for a DynamoDB Local endpoint, with its longer client timeouts."""
        fields.setdefault("dynamodb_connect_timeout_seconds", cls.LOCAL_CONNECT_TIMEOUT_SECONDS)
        fields.setdefault("dynamodb_read_timeout_seconds", cls.LOCAL_READ_TIMEOUT_SECONDS)
        return cls(dynamodb_endpoint=endpoint, **fields)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env: Mapping[str, str] = os.environ if environ is None else environ
        local = bool(env.get("STAGETRACK_DYNAMODB_ENDPOINT"))
        return cls(
            table_name=env_table(env, "STAGETRACK_TABLE", cls.table_name),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or cls.region,
            dynamodb_endpoint=env.get("STAGETRACK_DYNAMODB_ENDPOINT") or None,
            dynamodb_connect_timeout_seconds=env_float(
                env, "STAGETRACK_DYNAMODB_CONNECT_TIMEOUT",
                cls.LOCAL_CONNECT_TIMEOUT_SECONDS if local else cls.dynamodb_connect_timeout_seconds,
                0.1, 10),
            dynamodb_read_timeout_seconds=env_float(
                env, "STAGETRACK_DYNAMODB_READ_TIMEOUT",
                cls.LOCAL_READ_TIMEOUT_SECONDS if local else cls.dynamodb_read_timeout_seconds, 0.1, 30),
            dynamodb_max_retries=env_int(
                env, "STAGETRACK_DYNAMODB_MAX_RETRIES", cls.dynamodb_max_retries, 0, 10),
            max_body_bytes=env_int(
                env, "STAGETRACK_MAX_BODY_BYTES", cls.max_body_bytes, 1024, 10 * 1024 * 1024
            ),
            webhook_max_body_bytes=env_int(
                env,
                "STAGETRACK_WEBHOOK_MAX_BODY_BYTES",
                cls.webhook_max_body_bytes,
                1024,
                WEBHOOK_BODY_CEILING,
            ),
            local_ticker=env_bool(env, "STAGETRACK_LOCAL_TICKER", False),
            timer_horizon_seconds=env_int(
                env, "STAGETRACK_TIMER_HORIZON_SECONDS", cls.timer_horizon_seconds, 0, 86400),
            run_retention_days=env_int(
                env, "STAGETRACK_RUN_RETENTION_DAYS", cls.run_retention_days, 0, 36500),
            ticker_interval_seconds=env_float(
                env, "STAGETRACK_TICKER_SECONDS", cls.ticker_interval_seconds, 0.01, 3600
            ),
            admin_token=env.get("STAGETRACK_ADMIN_TOKEN") or "stagetrack-local-admin",
            rate_limit_per_minute=env_int(
                env, "STAGETRACK_RATE_LIMIT_PER_MINUTE", cls.rate_limit_per_minute, 1, 1_000_000
            ),
            secret_pepper=env.get("STAGETRACK_SECRET_PEPPER") or cls.secret_pepper,
            secret_key=env.get("STAGETRACK_SECRET_KEY") or "stagetrack-local-secret-key",
            previous_secret_keys=tuple(
                k for k in env.get("STAGETRACK_PREVIOUS_SECRET_KEYS", "").split(",") if k
            ),
            event_bus=env.get("STAGETRACK_EVENT_BUS") or None,
            delivery_queue_url=env.get("STAGETRACK_DELIVERY_QUEUE_URL") or None,
            delivery_dlq_url=env.get("STAGETRACK_DELIVERY_DLQ_URL") or None,
            ingest_dlq_url=env.get("STAGETRACK_INGEST_DLQ_URL") or None,
            insights_rebuild_function=env.get("STAGETRACK_INSIGHTS_REBUILD_FUNCTION") or None,
            delivery_max_attempts=env_int(
                env, "STAGETRACK_DELIVERY_MAX_ATTEMPTS", cls.delivery_max_attempts, 1, 50
            ),
            delivery_timeout_seconds=env_float(
                env, "STAGETRACK_DELIVERY_TIMEOUT_SECONDS", cls.delivery_timeout_seconds, 0.1, 60
            ),
            allow_local_subscribers=env_bool(env, "STAGETRACK_ALLOW_LOCAL_SUBSCRIBERS", False),
            public_url=public_url(env.get("STAGETRACK_PUBLIC_URL")),
            metrics_namespace=metrics_namespace(env.get("STAGETRACK_METRICS_NAMESPACE")),
            secret_ids=tuple(s.strip() for s in env.get("STAGETRACK_SECRET_IDS", "").split(",") if s.strip()),
            schedule_group=schedule_group(env.get("STAGETRACK_SCHEDULE_GROUP")),
            schedule_target_arn=env.get("STAGETRACK_SCHEDULE_TARGET_ARN") or None,
            schedule_role_arn=env.get("STAGETRACK_SCHEDULE_ROLE_ARN") or None,
            schedule_dlq_arn=env.get("STAGETRACK_SCHEDULE_DLQ_ARN") or None,
            otlp_endpoint=(env.get("STAGETRACK_OTLP_ENDPOINT") or "").strip() or None,
            otlp_headers=env.get("STAGETRACK_OTLP_HEADERS") or "",
        )


def public_url(value: str | None) -> str | None:
    """``STAGETRACK_PUBLIC_URL``: an http(s) URL without query or fragment, kept without its
    trailing "/". A value that is not one fails at start-up, not in every event."""
    if not value:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise SettingsError("STAGETRACK_PUBLIC_URL must be an http(s) URL without query or fragment, "
                            f"e.g. https://ci.example.com/prod; got {_shown(value)}")
    return value.strip().rstrip("/")


_NAMESPACE = re.compile(r"[A-Za-z0-9.\-_/#:]{1,255}")  # CloudWatch's rule for namespaces


def metrics_namespace(value: str | None) -> str | None:
    """``STAGETRACK_METRICS_NAMESPACE``: a CloudWatch namespace (not under ``AWS/``, which is
    AWS's own); empty or unset: no metrics."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not _NAMESPACE.fullmatch(value) or value.upper().startswith("AWS/"):
        raise SettingsError("STAGETRACK_METRICS_NAMESPACE must be a CloudWatch namespace: 1 to 255 of "
                            f"A-Z a-z 0-9 . - _ / # :, not starting with AWS/; got {_shown(value)}")
    return value


_SCHEDULE_GROUP = re.compile(r"[0-9A-Za-z_.\-]{1,64}")  # EventBridge Scheduler's rule for group names


def schedule_group(value: str | None) -> str | None:
    """``STAGETRACK_SCHEDULE_GROUP``: an EventBridge Scheduler schedule group name; empty or
    unset: no EventBridge schedules."""
    if value is None or not value.strip():
        return None
    if not _SCHEDULE_GROUP.fullmatch(value.strip()):
        raise SettingsError("STAGETRACK_SCHEDULE_GROUP must be a schedule group name: 1 to 64 of "
                            f"A-Z a-z 0-9 _ . -; got {_shown(value)}")
    return value.strip()
