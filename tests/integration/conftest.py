"""The integration tier: the DynamoDB store on moto and DynamoDB Local, the HTTP API through
chalice's test client over moto, streams/outbox, timers, the state machine, the infrastructure."""
from tests.fixtures.backends import (  # noqa: F401  (pytest finds fixtures by name here)
    any_ctx,
    aws,
    client,
    ctx,
    ddb_calls,
    ddb_local_endpoint,
    local_ctx,
)
