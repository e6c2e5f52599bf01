"""The HTTP client: JSON over urllib, a bearer token, no redirects followed (a redirect would carry
the Authorization header to wherever it points), and every failure turned into a CliError whose
message says what happened and what to do.

The transport is injectable (``Transport``), so the commands are tested without sockets."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from stagetrack_cli import __version__
from stagetrack_cli.errors import AUTH, CONFLICT, INVALID, NOT_FOUND, UNAVAILABLE, CliError

# (method, url, headers, body) -> (status, headers with lower-case names, body)
Transport = Callable[[str, str, dict[str, str], bytes | None], tuple[int, dict[str, str], bytes]]

TIMEOUT_SECONDS = 30.0
MAX_ANSWER_BYTES = 16 * 1024 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # the 3xx answer comes back as an HTTPError, reported below


_OPENER = urllib.request.build_opener(_NoRedirect())


def urllib_transport(method: str, url: str, headers: dict[str, str],
                     body: bytes | None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=TIMEOUT_SECONDS) as answer:
            return answer.status, _lower(answer.headers.items()), answer.read(MAX_ANSWER_BYTES)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, _lower(e.headers.items() if e.headers else []), e.read(MAX_ANSWER_BYTES)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CliError(f"cannot reach the server at {url.split('/api')[0]}: {reason}", UNAVAILABLE,
                       "check STAGETRACK_URL (or `stagetrack login --url`) and that the server is up",
                       code="unreachable") from None


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def segment(value: str) -> str:
    """One path segment: ids are opaque, so everything but unreserved characters and ':' is
    escaped (a '/' or '..' in an argument never reaches another route)."""
    return quote(value, safe=":")


class Api:
    def __init__(self, base_url: str, token: str | None, transport: Transport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.transport = transport or urllib_transport

    def call(self, method: str, path: str, query: Mapping[str, object] | None = None,
             body: object = None, headers: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON answer of a 2xx; a CliError for anything else."""
        status, _, payload = self.exchange(method, path, query, body, headers)
        return payload

    def exchange(self, method: str, path: str, query: Mapping[str, object] | None = None,
                 body: object = None, headers: Mapping[str, str] | None = None) -> tuple[int, dict, Any]:
        url = self.base_url + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urlencode(params)
        sent = {"Accept": "application/json", "User-Agent": f"stagetrack-cli/{__version__}"}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        status, answer_headers, raw = self.transport(method, url, sent, data)
        payload = _decode(raw)
        if 200 <= status < 300:
            if payload is _NOT_JSON:
                raise CliError(f"the server's answer to {method} {path} is not JSON", UNAVAILABLE,
                               "check that STAGETRACK_URL is the stagetrack API's base URL",
                               status=status, code="not_json")
            return status, answer_headers, payload
        raise _failure(method, path, status, answer_headers, payload)


_NOT_JSON = object()


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return _NOT_JSON


def _failure(method: str, path: str, status: int, headers: dict[str, str], payload: Any) -> CliError:
    error = payload.get("error") if isinstance(payload, dict) else None
    body = payload if isinstance(error, dict) else None
    code = str(error.get("code")) if isinstance(error, dict) and error.get("code") else None
    message = str(error.get("message")) if isinstance(error, dict) and error.get("message") else None
    what = f"{method} {path}: {status}"
    if status == 401:
        return CliError(f"{what} {message or 'the server did not accept the token'}", AUTH,
                        "the token is missing, wrong or revoked: set STAGETRACK_TOKEN "
                        "or run `stagetrack login`",
                        status, code or "unauthorized", body)
    if status == 403:
        hint = ("the gate's approval policy does not let this token decide: `stagetrack runs show RUN` "
                "lists its approvers" if code == "not_an_approver" else
                "this token lacks the scope (read, operate or admin) or the pipeline: "
                "ask an admin for a token that has it")
        return CliError(f"{what} {message or 'forbidden'}", AUTH, hint, status, code or "forbidden", body)
    if status == 404:
        return CliError(f"{what} {message or 'not found'}", NOT_FOUND,
                        "check the id (`stagetrack runs list` shows them) "
                        "and that your token covers its pipeline",
                        status, code or "not_found", body)
    if status == 409:
        return CliError(f"{what} {message or 'conflict'}" + (f" ({code})" if code else ""), CONFLICT,
                        _conflict_hint(code), status, code or "conflict", body)
    if status in (400, 413, 422):
        details = error.get("details") if isinstance(error, dict) else None
        fields = ", ".join(str(d.get("field")) for d in details or []
                           if isinstance(d, dict) and d.get("field"))
        return CliError(f"{what} {message or 'bad request'}" + (f" (fields: {fields})" if fields else ""),
                        INVALID, "fix the arguments named above (`stagetrack COMMAND --help`)",
                        status, code or "bad_request", body)
    if status == 429:
        wait = headers.get("retry-after", "")
        seconds = float(wait) if wait.isdigit() else None  # delta-seconds, as the API sends it
        return CliError(f"{what} rate limited", UNAVAILABLE,
                        f"try again in {int(seconds)} s" if seconds is not None else "try again in a minute",
                        status, code or "rate_limited", body, retry_after=seconds)
    if 300 <= status < 400:
        return CliError(f"{what} the server answered with a redirect "
                        "(not followed: it would carry the token)", UNAVAILABLE,
                        "use the API's own base URL in STAGETRACK_URL (https://..., no trailing path)",
                        status, "redirect", body)
    return CliError(f"{what} {message or 'the server failed'}", UNAVAILABLE,
                    "try again later; if it persists, check the server's logs", status,
                    code or "server_error", body)


def _conflict_hint(code: str | None) -> str:
    return {
        "illegal_transition": "the stage's status does not allow this change: `stagetrack runs show RUN`",
        "conflict": "someone changed it at the same time: run the command again",
        "already_decided": "the gate was decided already: `stagetrack runs show RUN`",
        "pipeline_paused": "the pipeline is paused: unpause it first",
        "nothing_to_retry": "nothing failed or was cancelled: nothing to retry",
        "run_queued": "the run waits in its concurrency group (QUEUED): it starts once promoted, "
                      "or cancel it to leave the queue",
        "concurrency_group_busy": "another run holds the concurrency group: wait for it to end",
        "concurrency_queue_full": "too many runs wait in the concurrency group: "
                                  "let some finish or cancel them",
        "run_deadline_passed": "the run's own timeoutSeconds has run out: start a new run",
    }.get(code or "", "see the run as it is now: `stagetrack runs show RUN`")
