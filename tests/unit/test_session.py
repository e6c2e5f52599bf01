"""The dashboard's browser session (api/session.py): a token exchanged for an HttpOnly cookie,
with exactly the token's rights, CSRF-checked writes, sign-out and expiry; on the memory stores."""
from __future__ import annotations

import json
import logging
import re

import pytest
from chalice.test import Client

from chalicelib.domain import auth
from tests.fixtures.api import ApiClient

COOKIE = re.compile(r"^stagetrack_session=(st_sess_[A-Za-z0-9_-]{43}); HttpOnly; Secure; "
                    r"SameSite=Strict; Path=/; Max-Age=43200$")


@pytest.fixture
def api(memory_ctx):
    from app import app

    with Client(app) as client:
        yield ApiClient(client, admin_token=memory_ctx.settings.admin_token)


def issue(api, scopes, pipelines=None, name="dash"):
    body = {"name": name, "scopes": scopes, **({"pipelines": pipelines} if pipelines else {})}
    response = api.post("/api/tokens", body)
    assert response.status_code == 201, response.json
    return response.json["token"]


def sign_in(api, token):
    response = api.post("/api/session", {"token": token}, auth=None)
    assert response.status_code == 200, response.json
    match = COOKIE.match(response.headers["Set-Cookie"])
    assert match, response.headers["Set-Cookie"]
    return match.group(1), response.json


def as_browser(session_id, csrf=None):
    headers = {"Cookie": f"theme=dark; stagetrack_session={session_id}"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return headers


def test_sign_in_answers_the_contract_and_the_cookie_holds_no_token(api, memory_ctx):
    token = issue(api, ["read"], ["web"], name="viewer")
    session_id, body = sign_in(api, token)
    assert set(body) == {"name", "scopes", "pipelines", "csrfToken"}
    assert body["name"] == "viewer" and body["scopes"] == ["read"] and body["pipelines"] == ["web"]
    assert body["csrfToken"].startswith("st_csrf_")
    assert token not in session_id
    stored = memory_ctx.stores.tokens.db.sessions  # type: ignore[attr-defined]
    assert list(stored) == [auth.hash_token(session_id)]  # the id is kept only as its hash
    assert token not in repr(stored) and session_id not in repr(stored)

    again = api.get("/api/session", headers=as_browser(session_id), auth=None)
    assert again.status_code == 200 and again.json == body
    assert again.headers["Cache-Control"] == "no-store"


def test_the_bootstrap_admin_token_signs_in_too(api):
    session_id, body = sign_in(api, api.admin_token)
    assert body["name"] == "bootstrap admin" and body["scopes"] == ["admin"] and body["pipelines"] is None
    created = api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}, auth=None,
                       headers=as_browser(session_id, body["csrfToken"]))
    assert created.status_code == 201, created.json
    assert created.json["stages"][0]["id"] == "web:1:1"


@pytest.mark.parametrize("raw, status, code", [
    (b'{"token": "st_' + b"x" * 43 + b'"}', 401, "unauthorized"),
    (b'{"token": "stagetrack-local-admin-not"}', 401, "unauthorized"),
    (b"{not json", 400, "bad_request"),
    (b"{}", 422, "validation_failed"),
    (b'{"token": "' + b"a" * 5000 + b'"}', 413, "payload_too_large"),
])
def test_a_bad_sign_in_is_refused_with_no_cookie_and_no_session(api, memory_ctx, raw, status, code):
    response = api.post("/api/session", raw=raw, auth=None)
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    assert "Set-Cookie" not in response.headers
    assert memory_ctx.stores.tokens.db.sessions == {}  # type: ignore[attr-defined]


def test_cookie_auth_has_exactly_the_tokens_scope_and_pipelines(api):
    api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]})
    api.post("/api/runs", {"pipeline": "api", "stages": ["BUILD"]})
    session_id, body = sign_in(api, issue(api, ["read"], ["web"]))
    browser = as_browser(session_id, body["csrfToken"])
    assert api.get("/api/runs/web:1", headers=browser, auth=None).status_code == 200
    assert api.get("/api/runs/api:1", headers=browser, auth=None).status_code == 404
    refused = api.post("/api/runs/web:1/cancel", {}, headers=browser, auth=None)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "forbidden"
    assert api.get("/api/runs/web:1").json["status"] != "CANCELLED"


def test_a_cookie_authenticated_write_needs_the_sessions_csrf_token(api):
    session_id, body = sign_in(api, issue(api, ["operate"]))
    create = {"pipeline": "web", "stages": ["BUILD"]}
    for headers in (as_browser(session_id), as_browser(session_id, "st_csrf_" + "x" * 43),
                    as_browser(session_id, "")):
        refused = api.post("/api/runs", create, headers=headers, auth=None)
        assert refused.status_code == 403, refused.json
        assert refused.json["error"]["code"] == "csrf_failed"
    assert api.get("/api/runs?pipeline=web").json["items"] == []  # nothing was written
    created = api.post("/api/runs", create, headers=as_browser(session_id, body["csrfToken"]), auth=None)
    assert created.status_code == 201, created.json
    assert created.json["pipeline"] == "web" and created.json["actor"] == "dash"  # the token's name
    # reads need no CSRF token; bearer clients never do
    assert api.get("/api/runs/web:1", headers=as_browser(session_id), auth=None).status_code == 200
    assert api.post("/api/runs", create).status_code == 201


def test_a_token_in_a_header_wins_over_the_cookie(api):
    session_id, _body = sign_in(api, issue(api, ["read"]))
    headers = {**as_browser(session_id), "Authorization": f"Bearer {api.admin_token}"}
    response = api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD"]}, headers=headers)
    assert response.status_code == 201  # the admin's bearer token, no CSRF needed


def test_sign_out_needs_the_csrf_token_then_ends_the_session_at_once(api):
    session_id, body = sign_in(api, issue(api, ["read"]))
    refused = api.delete("/api/session", headers=as_browser(session_id), auth=None)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "csrf_failed"
    assert api.get("/api/session", headers=as_browser(session_id), auth=None).status_code == 200

    out = api.delete("/api/session", headers=as_browser(session_id, body["csrfToken"]), auth=None)
    assert out.status_code == 204 and out.body == b""
    assert out.headers["Set-Cookie"] == ("stagetrack_session=; HttpOnly; Secure; SameSite=Strict; "
                                         "Path=/; Max-Age=0")
    for path in ("/api/session", "/api/runs?pipeline=web"):
        gone = api.get(path, headers=as_browser(session_id), auth=None)
        assert gone.status_code == 401 and gone.json["error"]["code"] == "unauthorized"
    # signing out again, or without a session, is the same 204
    assert api.delete("/api/session", headers=as_browser(session_id), auth=None).status_code == 204
    assert api.delete("/api/session", auth=None).status_code == 204


def test_a_session_ends_with_its_token_and_after_twelve_hours(api, clock):
    created = api.post("/api/tokens", {"name": "short", "scopes": ["read"]}).json
    session_id, _body = sign_in(api, created["token"])
    assert api.delete(f"/api/tokens/{created['id']}").status_code == 200
    assert api.get("/api/session", headers=as_browser(session_id), auth=None).status_code == 401

    session_id, _body = sign_in(api, issue(api, ["read"], name="other"))
    clock.advance(auth.SESSION_SECONDS - 1)
    assert api.get("/api/session", headers=as_browser(session_id), auth=None).status_code == 200
    clock.advance(1)
    assert api.get("/api/session", headers=as_browser(session_id), auth=None).status_code == 401


@pytest.mark.parametrize("cookie", ["stagetrack_session=st_sess_" + "A" * 43, "stagetrack_session=",
                                    "stagetrack_session=" + "%00" * 10, "stagetrack_session=x" * 900])
def test_an_unknown_or_malformed_cookie_is_401_on_api_routes(api, cookie):
    response = api.get("/api/runs?pipeline=web", headers={"Cookie": cookie}, auth=None)
    assert response.status_code == 401, response.json
    assert response.json["error"]["code"] == "unauthorized"
    session = api.get("/api/session", headers={"Cookie": cookie}, auth=None)
    assert session.status_code == 401


def test_neither_the_token_nor_the_session_id_reaches_a_log(api, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    token = issue(api, ["operate"])
    session_id, body = sign_in(api, token)
    api.get("/api/session", headers=as_browser(session_id), auth=None)
    api.post("/api/runs", raw=json.dumps({"pipeline": "web"}), headers=as_browser(session_id), auth=None)
    logs = caplog.text + "\n".join(capsys.readouterr())
    for secret in (token, session_id, body["csrfToken"]):
        assert secret not in logs


# ---- what the pages poll: ETag and If-None-Match ------------------------------------------------

def test_a_polled_run_answers_304_while_unchanged_and_200_once_it_changes(api, clock):
    api.post("/api/runs", {"pipeline": "web", "stages": ["BUILD", "UNIT_TEST"]})
    first = api.get("/api/runs/web:1?include=attempts")
    tag = first.headers["ETag"]
    assert first.status_code == 200 and re.fullmatch(r'"[0-9a-f]{32}"', tag)
    assert first.headers["Cache-Control"] == "private, no-cache"

    same = api.get("/api/runs/web:1?include=attempts", headers={"If-None-Match": tag})
    assert same.status_code == 304 and same.body == b"" and same.headers["ETag"] == tag
    assert api.get("/api/runs/web:1?include=attempts",
                   headers={"If-None-Match": f"\"other\", W/{tag}"}).status_code == 304

    api.patch("/api/stages/web:1:1", {"status": "IN_PROGRESS"})
    changed = api.get("/api/runs/web:1?include=attempts", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    clock.advance(1)  # a running stage's duration grows: the answer changes with it
    later = api.get("/api/runs/web:1?include=attempts", headers={"If-None-Match": changed.headers["ETag"]})
    assert later.status_code == 200 and later.json["stages"][0]["duration"] == 1


def test_errors_and_other_routes_carry_no_etag(api):
    missing = api.get("/api/runs/web:9", headers={"If-None-Match": "*"})
    assert missing.status_code == 404 and "ETag" not in missing.headers
    assert "ETag" not in api.get("/api/tokens").headers


# ---- the dashboard's pages (api/web.py) ---------------------------------------------------------

@pytest.mark.parametrize("path, media_type, marker", [
    ("/", "text/html; charset=utf-8", b'<script type="module" src="web/app.js"></script>'),
    ("/web/app.js", "text/javascript; charset=utf-8", b"function drawGantt("),
    ("/web/app.css", "text/css; charset=utf-8", b"prefers-color-scheme: dark"),
])
def test_the_pages_are_served_here_with_a_strict_policy_and_revalidated(api, path, media_type, marker):
    response = api.get(path, auth=None)  # a signed-out visitor: the page, never a 403
    assert response.status_code == 200 and marker in response.body
    headers = response.headers
    assert headers["Content-Type"] == media_type
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "private, no-cache"
    again = api.get(path, auth=None, headers={"If-None-Match": headers["ETag"]})
    assert again.status_code == 304 and again.body == b""


def test_the_page_has_no_inline_script_or_style_and_no_outside_host():
    from chalicelib.api.web import WEB_DIR

    html = (WEB_DIR / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="web/app.js">']
    assert "<style" not in html and " style=" not in html and " on" + "click=" not in html
    for name in ("index.html", "app.js", "app.css"):
        text = (WEB_DIR / name).read_text()
        # every asset and call is this origin's (SVG's XML namespace is a name, never fetched)
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg\")", text), name
        assert "innerHTML" not in text and "eval(" not in text, name


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_another_site_cannot_sign_a_browser_in_with_a_form(api, memory_ctx, content_type):
    """A cross-site form or no-cors fetch can only send these media types: login CSRF is a 415."""
    response = api.post("/api/session", raw=json.dumps({"token": api.admin_token}), auth=None,
                        headers={"Content-Type": content_type})
    assert response.status_code == 415 and response.json["error"]["code"] == "unsupported_media_type"
    assert "Set-Cookie" not in response.headers
    assert memory_ctx.stores.tokens.db.sessions == {}  # type: ignore[attr-defined]
