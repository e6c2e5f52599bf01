"""What people browse by: the pipelines, and the approvals waiting (GET /api/runs, the search
across pipelines, is the native runs listing: api/native.py). Each shows a token limited to some
pipelines only those (``ACTS_ON_OWN_RECORDS``: the service is given the caller's reach)."""
from __future__ import annotations

from chalice import Blueprint

from .. import wiring
from ..domain import auth
from ..domain.schemas import ApprovalsQuery, PipelinesQuery
from ..domain.views import approval_view, pipeline_overview_view
from ..service import browse
from .parsing import parse_query
from .responses import json_response
from .routing import route
from .security import authenticated_principal

routes = Blueprint(__name__)


def _query(model):
    return parse_query(routes.current_request.query_params, model)


@route(routes, "/api/pipelines", methods=["GET"], acts_on=auth.ACTS_ON_OWN_RECORDS, etag=True,
       summary="Every pipeline the token may see, most recently active first, with its newest runs")
def list_pipelines():
    ctx = wiring.context()
    query = _query(PipelinesQuery)
    found, cursor = browse.list_pipelines(ctx, authenticated_principal().pipelines, query)
    return json_response({"items": [pipeline_overview_view(entry.pipeline, entry.recent_runs)
                                    for entry in found], "nextCursor": cursor})


@route(routes, "/api/approvals", methods=["GET"], acts_on=auth.ACTS_ON_OWN_RECORDS, etag=True,
       summary="Stages waiting for approval that the token may decide, waiting longest first")
def list_approvals():
    ctx = wiring.context()
    query = _query(ApprovalsQuery)
    principal = authenticated_principal()
    found, cursor = browse.approvals(ctx, principal.pipelines, principal.has(auth.OPERATE), query)
    now = ctx.clock.now()
    return json_response({"items": [approval_view(entry.stage, entry.run, now) for entry in found],
                          "nextCursor": cursor})
