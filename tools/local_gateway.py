"""chalice local (`make run`) and chalice.test.Client answer an unknown path as the deployed API does.

Chalice's stand-in for API Gateway (chalice.local.LocalGateway) answers a path no route matches
with 403 ``{"message": "Missing Authentication Token"}`` or, when the request has an
``Authorization`` header, with SigV4's complaint that ends in ``Authorization=<the header>``:
the caller's token echoed in the body. Deployed, API Gateway answers that case with our gateway
response for MISSING_AUTHENTICATION_TOKEN (infra/part_gateway.py); ``install()`` makes the local
gateway answer with that same response (404 ``not_found``, fixed message, nothing echoed).
Everything else (wrong methods, HEAD, OPTIONS) is answered by the app's own routes
(chalicelib/api/fallbacks.py), the same code locally and deployed.

Call ``install()`` before the server or test client is created (tools/run_local.CHALICE_MAIN,
tests/fixtures/backends.py).
"""
from __future__ import annotations

import chalice.local
import chalice.test

from infra.part_gateway import local_response


class RouteNotFound(chalice.local.LocalGatewayException):
    """A path no route matches: the gateway response, as API Gateway would send it."""

    def __init__(self, method: str, request_id: str) -> None:
        status, headers, body = local_response("MISSING_AUTHENTICATION_TOKEN")
        self.CODE = status
        # a HEAD response has no body (chalice local would write one and break the connection)
        super().__init__({**headers, "x-amzn-RequestId": request_id},
                         None if method.upper() == "HEAD" else body.encode())


class GatewayWithResponses(chalice.local.LocalGateway):
    def _generate_lambda_event(self, method, path, headers, body):
        try:
            return super()._generate_lambda_event(method, path, headers, body)
        except ValueError:  # chalice's "No matching route found"
            raise RouteNotFound(method, self._generate_lambda_context().aws_request_id) from None


def install() -> None:
    """Idempotent; both modules hold their own reference to LocalGateway."""
    # A deliberate monkeypatch (chalice has no hook to choose the gateway class); mypy forbids
    # assigning to a name it knows as a class.
    chalice.local.LocalGateway = GatewayWithResponses  # type: ignore[misc]
    chalice.test.LocalGateway = GatewayWithResponses  # type: ignore[misc]
