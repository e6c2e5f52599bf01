"""Process settings, read once from the environment with working local defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, field


# A webhook body is never accepted past this, whatever the environment says: a Lambda's
# synchronous event is at most 6 MB, and the body travels in it escaped.
WEBHOOK_BODY_CEILING = 4 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    table_name: str = "stagetrack"
    region: str = "us-east-1"
    dynamodb_endpoint: str | None = None
    max_body_bytes: int = 64 * 1024
    # Webhook routes only: a GitLab Pipeline Hook lists every job (about 0.7-1 KB each), so a
    # 256-job pipeline sends ~250 KB and a 500-job one ~500 KB. API Gateway takes 10 MB and a
    # synchronous Lambda event 6 MB; 2 MiB leaves room for JSON escaping in the event.
    webhook_max_body_bytes: int = 2 * 1024 * 1024
    local_ticker: bool = False
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
    delivery_max_attempts: int = 8
    delivery_timeout_seconds: float = 5.0
    # Subscribers at http://127.0.0.1 / localhost (and other private addresses) are refused
    # unless this is set: it is for `make run` and tests, never for a deployment.
    allow_local_subscribers: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            table_name=env.get("STAGETRACK_TABLE", cls.table_name),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or cls.region,
            dynamodb_endpoint=env.get("STAGETRACK_DYNAMODB_ENDPOINT") or None,
            max_body_bytes=int(env.get("STAGETRACK_MAX_BODY_BYTES", cls.max_body_bytes)),
            webhook_max_body_bytes=min(WEBHOOK_BODY_CEILING, int(env.get(
                "STAGETRACK_WEBHOOK_MAX_BODY_BYTES", cls.webhook_max_body_bytes))),
            local_ticker=env.get("STAGETRACK_LOCAL_TICKER", "") in ("1", "true", "yes"),
            ticker_interval_seconds=float(env.get("STAGETRACK_TICKER_SECONDS", cls.ticker_interval_seconds)),
            admin_token=env.get("STAGETRACK_ADMIN_TOKEN") or "stagetrack-local-admin",
            rate_limit_per_minute=max(1, int(env.get("STAGETRACK_RATE_LIMIT_PER_MINUTE", cls.rate_limit_per_minute))),
            secret_pepper=env.get("STAGETRACK_SECRET_PEPPER") or cls.secret_pepper,
            secret_key=env.get("STAGETRACK_SECRET_KEY") or "stagetrack-local-secret-key",
            previous_secret_keys=tuple(k for k in env.get("STAGETRACK_PREVIOUS_SECRET_KEYS", "").split(",") if k),
            event_bus=env.get("STAGETRACK_EVENT_BUS") or None,
            delivery_queue_url=env.get("STAGETRACK_DELIVERY_QUEUE_URL") or None,
            delivery_dlq_url=env.get("STAGETRACK_DELIVERY_DLQ_URL") or None,
            ingest_dlq_url=env.get("STAGETRACK_INGEST_DLQ_URL") or None,
            delivery_max_attempts=max(1, int(env.get("STAGETRACK_DELIVERY_MAX_ATTEMPTS", cls.delivery_max_attempts))),
            delivery_timeout_seconds=float(env.get("STAGETRACK_DELIVERY_TIMEOUT_SECONDS", cls.delivery_timeout_seconds)),
            allow_local_subscribers=env.get("STAGETRACK_ALLOW_LOCAL_SUBSCRIBERS", "") in ("1", "true", "yes"),
        )
