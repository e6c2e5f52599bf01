"""The dashboard's pages: one HTML document, one JS module and one CSS file (chalicelib/web/),
served by this same app -- no third-party host, no build step.

Every answer carries a strict Content-Security-Policy (only this origin's script, style and
connections; no inline script or style; no framing), ``X-Content-Type-Options: nosniff`` and an
ETag with ``Cache-Control: private, no-cache``, so a browser revalidates with one 304. ``/`` is
public and always the same document: a signed-out visitor sees the sign-in form the script
draws (after ``GET /api/session`` answers 401), never a 403.
"""
from __future__ import annotations

from pathlib import Path

from chalice import Blueprint, Response

from .routing import route

routes = Blueprint(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
ASSETS = {  # served path -> (file under chalicelib/web, media type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/web/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/web/app.css": ("app.css", "text/css; charset=utf-8"),
}
_cache: dict[str, str] = {}


def asset(path: str) -> Response:
    name, media_type = ASSETS[path]
    if name not in _cache:  # read once per container; the files ship in the Lambda package
        _cache[name] = (WEB_DIR / name).read_text(encoding="utf-8")
    return Response(body=_cache[name], status_code=200,
                    headers={"Content-Type": media_type, **SECURITY_HEADERS})


def _page(path: str):
    def view():
        return asset(path)
    view.__name__ = "web_" + ASSETS[path][0].replace(".", "_")
    return view


for _path, (_name, _type) in ASSETS.items():
    route(routes, _path, methods=["GET"], scope="public", etag=True,
          summary=f"The dashboard: {_name}",
          openapi={"responses": {"200": {"description": _name,
                                         "content": {_type.split(";")[0]: {"schema": {"type": "string"}}}}}})(
        _page(_path))
