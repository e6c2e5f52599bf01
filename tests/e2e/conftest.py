"""The end-to-end tier: HTTP against `chalice local` over DynamoDB Local, started as `make run`
starts them (one per session / xdist worker), schemathesis, and the HTTP error shapes."""
from tests.fixtures.backends import (  # noqa: F401  (pytest finds fixtures by name here)
    aws,
    chalice_local,
    client,
    ctx,
    ddb_calls,
    ddb_local_endpoint,
    start_chalice_local,
)
