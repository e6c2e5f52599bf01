"""API Gateway's own answers (gateway responses) in the API's error shape, with fixed messages.

What API Gateway answers before (or instead of) the function: an unknown path
(MISSING_AUTHENTICATION_TOKEN, a 403 ``{"message": "Missing Authentication Token"}`` by default),
a throttled request, a body over its 10 MB limit, a failed integration... By default those bodies
are ``{"message": $context.error.messageString}``, and for a request that carries an
``Authorization`` header the message is SigV4's "Authorization header requires 'Credential'
parameter... Authorization=<the header>": the caller's token, echoed in an error body (and in
whatever logs or proxies keep error bodies). Every type API Gateway has is therefore given a
fixed template here, rendered with the app's own error_body, and no template or header names
``$context.error.*`` or a ``method.request.*`` value.

They go into the REST API's OpenAPI body (``x-amazon-apigateway-gateway-responses``), not into
separate AWS::ApiGateway::GatewayResponse resources: SAM hashes the body into the deployment's
logical id, so a change to them is deployed with the API (a separate resource would only take
effect at the next deployment of the stage).

A wrong method on a known path never reaches these: api/fallbacks.py gives every path a 405
for the methods it lacks. tools/local_gateway.py answers an unknown path under chalice local
with ``local_response("MISSING_AUTHENTICATION_TOKEN")``, the same as here.
"""
from __future__ import annotations

import json
from typing import NamedTuple

from chalicelib.api.responses import error_body
from chalicelib.domain.auth import REALM

FUNCTIONS: list = []
REST_API = "RestAPI"  # chalice's logical id of the API Gateway REST API (AWS::Serverless::Api)
EXTENSION = "x-amazon-apigateway-gateway-responses"


class GatewayAnswer(NamedTuple):
    status: int | None  # None: keep the status API Gateway chose (the DEFAULT_* types)
    code: str
    message: str


# Every GatewayResponseType (API Gateway API reference, GatewayResponse.responseType).
ANSWERS: dict[str, GatewayAnswer] = {
    "DEFAULT_4XX": GatewayAnswer(None, "bad_request", "the request was refused"),
    "DEFAULT_5XX": GatewayAnswer(None, "internal_error", "internal error"),
    "MISSING_AUTHENTICATION_TOKEN": GatewayAnswer(404, "not_found", "no such resource: see /openapi.json"),
    "RESOURCE_NOT_FOUND": GatewayAnswer(404, "not_found", "no such resource: see /openapi.json"),
    "UNAUTHORIZED": GatewayAnswer(401, "unauthorized", "authentication required"),
    "INVALID_SIGNATURE": GatewayAnswer(401, "unauthorized", "this API takes no AWS signature: send "
                                                            "Authorization: Bearer <token>"),
    "EXPIRED_TOKEN": GatewayAnswer(401, "unauthorized", "the credentials have expired"),
    "INVALID_API_KEY": GatewayAnswer(403, "forbidden", "the API key is not valid"),
    "ACCESS_DENIED": GatewayAnswer(403, "forbidden", "access denied"),
    "WAF_FILTERED": GatewayAnswer(403, "forbidden", "the request was refused by the firewall"),
    "AUTHORIZER_FAILURE": GatewayAnswer(500, "internal_error", "internal error"),
    "AUTHORIZER_CONFIGURATION_ERROR": GatewayAnswer(500, "internal_error", "internal error"),
    "API_CONFIGURATION_ERROR": GatewayAnswer(500, "internal_error", "internal error"),
    "BAD_REQUEST_PARAMETERS": GatewayAnswer(400, "bad_request", "malformed request parameters"),
    "BAD_REQUEST_BODY": GatewayAnswer(400, "bad_request", "malformed request body"),
    "REQUEST_TOO_LARGE": GatewayAnswer(413, "payload_too_large", "the request is too large"),
    "UNSUPPORTED_MEDIA_TYPE": GatewayAnswer(415, "unsupported_media_type", "unsupported media type"),
    "THROTTLED": GatewayAnswer(429, "rate_limited", "too many requests: retry later"),
    "QUOTA_EXCEEDED": GatewayAnswer(429, "rate_limited", "request quota exceeded: retry later"),
    "INTEGRATION_FAILURE": GatewayAnswer(502, "internal_error", "internal error"),
    "INTEGRATION_TIMEOUT": GatewayAnswer(504, "gateway_timeout", "the request took too long"),
}


def _headers(answer: GatewayAnswer) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    if answer.status == 401:
        headers["WWW-Authenticate"] = REALM
    return headers


def body_of(answer: GatewayAnswer) -> str:
    return json.dumps(error_body(answer.code, answer.message), separators=(",", ":"))


def gateway_responses() -> dict:
    """The OpenAPI extension: fixed JSON bodies, static header values only."""
    rendered = {}
    for kind, answer in ANSWERS.items():
        response: dict[str, object] = {
            "responseParameters": {f"gatewayresponse.header.{name}": f"'{value}'"
                                   for name, value in _headers(answer).items() if name != "Content-Type"},
            "responseTemplates": {"application/json": body_of(answer)},
        }
        if answer.status is not None:
            response["statusCode"] = str(answer.status)
        rendered[kind] = response
    return rendered


def local_response(kind: str) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a gateway response, for tools/local_gateway.py."""
    answer = ANSWERS[kind]
    if answer.status is None:
        raise ValueError(f"{kind} keeps API Gateway's status; give the concrete type")
    return answer.status, _headers(answer), body_of(answer)


def resources(arns) -> dict:
    return {REST_API: {"Properties": {"DefinitionBody": {EXTENSION: gateway_responses()}}}}
