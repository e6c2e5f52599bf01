"""The front door: API Gateway's own answers (gateway responses) in the API's error shape, with
fixed messages; stage and method throttling; access logs; an optional WAF web ACL; and the
concurrency that keeps a flood at the door from starving the consumers behind it.

Throttling, access logs and WAF are at the bottom of this file (``resources``, ``finish``);
docs/deploy.md ("The front door") gives the parameters and the timeout budget.

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

from .part_watch import RETENTION, api_stage

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


# ---- throttling, access logs, WAF, concurrency -----------------------------------------------

API_FUNCTION = "APIHandler"  # chalice's logical id of the API function
API_TIMEOUT_SECONDS = 25  # .chalice/config.json lambda_timeout of api_handler; API Gateway gives up at 29 s
ACCESS_LOG_GROUP = "ApiAccessLogGroup"
WAF_CONDITION = "HasWebAcl"
API_RESERVED_CONDITION = "ReservesApiConcurrency"
EVENTS_RESERVED_CONDITION = "ReservesEventConcurrency"
# The async consumers (invoked by SNS and EventBridge): Lambda keeps a throttled async event and
# retries it for up to six hours, so a cap delays them and loses nothing.
ASYNC_CONSUMERS = ("IngestTopic", "AwsCiEvents")
# Sign-in checks a token without one in hand: a tighter limit than the stage's, per method.
SIGN_IN = ("/api/session", "POST")

# One JSON line per request. What it leaves out on purpose: the Authorization, X-Auth-Token and
# Cookie headers (no $method.request.* or $input.* at all), the query string, the user agent
# (free text a client controls) and $context.error.message (for a request with an Authorization
# header it quotes the header: see the module docstring).
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "time": "$context.requestTimeEpoch",
    "ip": "$context.identity.sourceIp",
    "method": "$context.httpMethod",
    "resource": "$context.resourcePath",
    "path": "$context.path",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "integrationStatus": "$context.integration.status",
    "errorType": "$context.error.responseType",
    "wafStatus": "$context.waf.status",
}


def access_log_format() -> str:
    return json.dumps(ACCESS_LOG_FIELDS, separators=(",", ":"))


def _escaped(path: str) -> str:
    """A resource path as MethodSettings names it ("/" inside a path is "~1")."""
    return "/" + path.replace("/", "~1")


def parameters() -> dict:
    def number(default: int, low: int, high: int, text: str) -> dict:
        return {"Type": "Number", "Default": default, "MinValue": low, "MaxValue": high, "Description": text}

    return {
        "ApiThrottleRate": number(50, 1, 10000, "Requests per second the API stage admits (steady rate)"),
        "ApiThrottleBurst": number(100, 1, 5000, "Requests the API stage admits at once (burst)"),
        "SignInThrottleRate": number(2, 1, 1000, "Requests per second to POST /api/session (sign-in)"),
        "SignInThrottleBurst": number(5, 1, 1000, "Burst of POST /api/session (sign-in)"),
        "ApiReservedConcurrency": number(
            50, 0, 3000, "Concurrent executions reserved for (and capping) the API function; "
                         "0: none reserved, no cap"),
        "QueueConsumerMaxConcurrency": number(
            10, 2, 1000, "Most concurrent executions each SQS event source mapping may use"),
        "EventConsumerReservedConcurrency": number(
            10, 0, 1000, "Concurrent executions reserved for (and capping) each SNS/EventBridge "
                         "consumer; 0: none reserved, no cap"),
        "WebAclArn": {"Type": "String", "Default": "",
                      "AllowedPattern": r"^(arn:aws[a-z-]*:wafv2:[a-z0-9-]+:\d{12}:regional/webacl/.+)?$",
                      "Description": "ARN of a REGIONAL WAFv2 web ACL to associate with the API stage; "
                                     "empty: none"},
    }


def conditions() -> dict:
    return {
        WAF_CONDITION: {"Fn::Not": [{"Fn::Equals": [{"Ref": "WebAclArn"}, ""]}]},
        API_RESERVED_CONDITION: {"Fn::Not": [{"Fn::Equals": [{"Ref": "ApiReservedConcurrency"}, 0]}]},
        EVENTS_RESERVED_CONDITION: {
            "Fn::Not": [{"Fn::Equals": [{"Ref": "EventConsumerReservedConcurrency"}, 0]}]},
    }


def _reserved(condition: str, parameter: str) -> dict:
    return {"ReservedConcurrentExecutions": {"Fn::If": [condition, {"Ref": parameter},
                                                        {"Ref": "AWS::NoValue"}]}}


def _method_settings() -> list[dict]:
    path, method = SIGN_IN
    return [
        {"ResourcePath": "/*", "HttpMethod": "*", "ThrottlingRateLimit": {"Ref": "ApiThrottleRate"},
         "ThrottlingBurstLimit": {"Ref": "ApiThrottleBurst"}},
        {"ResourcePath": _escaped(path), "HttpMethod": method,
         "ThrottlingRateLimit": {"Ref": "SignInThrottleRate"},
         "ThrottlingBurstLimit": {"Ref": "SignInThrottleBurst"}},
    ]


def resources(arns) -> dict:
    stage = f"{REST_API}{_stage_name()}Stage"  # the stage SAM makes of the API
    return {
        REST_API: {"Properties": {
            "DefinitionBody": {EXTENSION: gateway_responses()},
            "MethodSettings": _method_settings(),
            "AccessLogSetting": {"DestinationArn": {"Fn::GetAtt": [ACCESS_LOG_GROUP, "Arn"]},
                                 "Format": access_log_format()},
        }},
        ACCESS_LOG_GROUP: {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete",
                           "UpdateReplacePolicy": "Delete", "Properties": {
                               # outside /stagetrack/<stack>/, where the API function may write
                               "LogGroupName": {"Fn::Sub": "/stagetrack-access/${AWS::StackName}"},
                               "RetentionInDays": {"Ref": RETENTION}}},
        "ApiWebAclAssociation": {
            "Type": "AWS::WAFv2::WebACLAssociation", "Condition": WAF_CONDITION, "DependsOn": [stage],
            "Properties": {"WebACLArn": {"Ref": "WebAclArn"}, "ResourceArn": {
                "Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}::/restapis/${%s}/stages/%s"
                           % (REST_API, _stage_name())}}},
        API_FUNCTION: {"Properties": _reserved(API_RESERVED_CONDITION, "ApiReservedConcurrency")},
        **{name: {"Properties": _reserved(EVENTS_RESERVED_CONDITION, "EventConsumerReservedConcurrency")}
           for name in ASYNC_CONSUMERS},
    }


def _stage_name() -> str:
    return api_stage()


def finish(resources: dict) -> None:
    """Every SQS event source mapping gets the concurrency cap, whichever part made it."""
    for resource in resources.values():
        events = resource.get("Properties", {}).get("Events", {}) if isinstance(resource, dict) else {}
        for event in events.values():
            if "Queue" in event.get("Properties", {}):
                event["Properties"]["ScalingConfig"] = {
                    "MaximumConcurrency": {"Ref": "QueueConsumerMaxConcurrency"}}
