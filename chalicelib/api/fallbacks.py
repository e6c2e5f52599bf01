"""Answers for the methods a path does not serve, registered as routes so that chalice local and
API Gateway + Lambda give the same ones.

Without them Chalice answers a wrong method with its own 405 (``{"Code": ...}``), and API
Gateway, which knows only the methods the template declares, with MISSING_AUTHENTICATION_TOKEN
(a 403 by default). So after every blueprint is registered, ``install(app)`` gives every path a
view for each method of ALL_METHODS it lacks:
- OPTIONS: 204 with ``Allow`` (no CORS headers: the dashboard is served from the same origin);
- any other: 405 ``method_not_allowed`` with ``Allow``, in the error shape of the path's routes
  (a dialect path answers in its dialect's shape).
They are public (the methods of a path are in /openapi.json anyway), read nothing, and are left
out of /openapi.json (their RouteSpec declares no methods). Unknown paths are not routes: the
gateway answers them (infra/part_gateway.py, and tools/local_gateway.py under chalice local).
"""
from __future__ import annotations

from chalice import Chalice, Response

from ..domain import auth
from ..domain.errors import MethodNotAllowed
from .responses import error_response
from .routing import ALL_METHODS, RouteSpec, secure


def install(app: Chalice) -> None:
    for path, entries in list(app.routes.items()):
        served = set(entries) | {"OPTIONS"}
        allow = ", ".join(m for m in ALL_METHODS if m in served)
        views = [entry.view_function for entry in entries.values()]
        render = next((v.render_error for v in views if hasattr(v, "render_error")),
                      lambda error, _status: error_response(error))
        dialect = next((v.route_spec.dialect for v in views if hasattr(v, "route_spec")), None)
        spec = RouteSpec(path=path, methods=(), scope=auth.PUBLIC, acts_on=None, dialect=dialect)
        missing = [m for m in ALL_METHODS if m not in entries]
        if missing:
            view = secure(_fallback(app, path, allow, render), app, spec, render)
            app.route(path, methods=missing, content_types=["*/*"])(view)


def _fallback(app: Chalice, path: str, allow: str, render):
    def fallback(**_params):
        method = app.current_request.method
        if method == "OPTIONS":
            return Response(body="", status_code=204, headers={"Allow": allow})
        error = MethodNotAllowed(f"{method} is not allowed on {path}; allowed: {allow}", allow=allow)
        response = render(error, 405)
        response.headers.update(error.headers)
        return response

    fallback.__name__ = "fallback_" + (
        path.strip("/").replace("/", "_").replace("{", "").replace("}", "") or "root"
    )
    return fallback

