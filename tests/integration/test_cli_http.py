"""The `stagetrack` CLI over real HTTP (its urllib transport) against a small standard-library
server that serves issue 13's contract for the endpoints the CLI reads across pipelines:
`GET /api/pipelines`, `GET /api/runs` without `pipeline` (the search filters) and
`GET /api/approvals`, plus what a hostile or broken server may do (redirect, no server at all).
The real stack is tests/e2e/test_cli.py."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from stagetrack_cli.main import main

TOKEN = "st_contract-token"


def run_view(run_id: str, status: str, branch: str) -> dict:
    pipeline, counter = run_id.split(":")
    return {
        "id": run_id,
        "pipeline": pipeline,
        "counter": int(counter),
        "status": status,
        "branch": branch,
        "actor": "alice",
        "source": "github",
        "sourceUrl": None,
        "environment": None,
        "createdAt": "2026-03-20T17:00:00.000Z",
        "startedAt": None,
        "endedAt": None,
        "duration": None,
        "commit": {"hash": "0123456789abcdef", "committedAt": "2026-03-20T16:59:00Z"},
        "stages": [],
    }


PIPELINES = [
    [
        {
            "name": "web",
            "paused": False,
            "lastActivityAt": "2026-03-20T17:05:00.000Z",
            "runCount": 12,
            "recentRuns": [
                {
                    "id": "web:12",
                    "counter": 12,
                    "status": "IN_PROGRESS",
                    "createdAt": "…",
                    "branch": "main",
                    "stages": [{"name": "BUILD", "status": "IN_PROGRESS"}],
                },
                {
                    "id": "web:11",
                    "counter": 11,
                    "status": "FAILURE",
                    "createdAt": "…",
                    "branch": "main",
                    "stages": [{"name": "BUILD", "status": "FAILURE"}],
                },
            ],
        }
    ],
    [{"name": "shop", "paused": True, "lastActivityAt": None, "runCount": 0, "recentRuns": []}],
]
APPROVALS = [
    {
        "stage": {"id": "web:12:3", "name": "prod", "status": "WAITING_FOR_APPROVAL"},
        "run": {"id": "web:12", "pipeline": "web", "counter": 12, "branch": "main", "actor": "alice"},
        "waitingSince": "2026-03-20T17:04:00.000Z",
    }
]


class Contract(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict, dict]] = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.seen.append((parts.path, query, dict(self.headers)))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.answer(401, {"error": {"code": "unauthorized", "message": "missing or bad token"}})
        if parts.path == "/api/pipelines":
            page = int(query.get("cursor", "0"))
            return self.answer(200, {"items": PIPELINES[page], "nextCursor": "1" if page == 0 else None})
        if parts.path == "/api/runs":
            items = [run_view("web:12", "IN_PROGRESS", "main"), run_view("shop:3", "SUCCESS", "main")]
            return self.answer(200, {"items": items, "nextCursor": None})
        if parts.path == "/api/approvals":
            return self.answer(200, {"items": APPROVALS, "nextCursor": None})
        if parts.path == "/api/runs/moved:1":
            self.send_response(302)
            self.send_header("Location", "/leak")
            self.end_headers()
            return None
        return self.answer(404, {"error": {"code": "not_found", "message": "no such thing"}})

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    Contract.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Contract)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def cli(base: str, *argv: str, token: str = TOKEN) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), env={"STAGETRACK_URL": base, "STAGETRACK_TOKEN": token}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_pipelines_list_every_page(server):
    code, out, _ = cli(server, "pipelines", "list", "--all", "--runs", "2")
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == [
        "PIPELINE",
        "PAUSED",
        "RUNS",
        "LAST",
        "ACTIVITY",
        "RECENT",
        "RUNS",
        "(newest",
        "first)",
    ]
    assert rows[1] == ["web", "-", "12", "2026-03-20T17:05:00.000Z", "#12:IN_PROGRESS", "#11:FAILURE"]
    assert rows[2] == ["shop", "paused", "0", "-"]
    assert [(path, query) for path, query, _ in Contract.seen] == [
        ("/api/pipelines", {"runs": "2"}),
        ("/api/pipelines", {"runs": "2", "cursor": "1"}),
    ]
    code, out, _ = cli(server, "pipelines", "list", "-o", "json")
    assert code == 0 and json.loads(out) == {"items": PIPELINES[0], "nextCursor": "1"}


def test_runs_list_searches_across_pipelines_with_every_filter(server):
    code, out, _ = cli(
        server,
        "runs",
        "list",
        "--branch",
        "main",
        "--actor",
        "alice",
        "--commit",
        "0123abc",
        "--source",
        "github",
        "--status",
        "SUCCESS",
        "--created-from",
        "2026-03-01T00:00:00Z",
        "--created-to",
        "2026-04-01T00:00:00Z",
        "--limit",
        "50",
    )
    assert code == 0
    assert Contract.seen[0][:2] == (
        "/api/runs",
        {
            "status": "SUCCESS",
            "branch": "main",
            "actor": "alice",
            "commit": "0123abc",
            "source": "github",
            "createdFrom": "2026-03-01T00:00:00Z",
            "createdTo": "2026-04-01T00:00:00Z",
            "limit": "50",
        },
    )
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["RUN", "STATUS", "BRANCH", "COMMIT", "ACTOR", "CREATED", "DURATION"]
    assert rows[1] == [
        "web:12",
        "IN_PROGRESS",
        "main",
        "0123456789",
        "alice",
        "2026-03-20T17:00:00.000Z",
        "-",
    ]


def test_approvals_inbox(server):
    code, out, err = cli(server, "approvals")
    assert code == 0
    assert [line.split() for line in out.splitlines()] == [
        ["RUN", "STAGE", "BRANCH", "ACTOR", "WAITING", "SINCE"],
        ["web:12", "prod", "main", "alice", "2026-03-20T17:04:00.000Z"],
    ]
    assert "stagetrack approve RUN STAGE" in err
    code, out, _ = cli(server, "approvals", "-o", "json")
    assert json.loads(out) == {"items": APPROVALS, "nextCursor": None}


def test_a_redirect_is_not_followed_so_the_token_goes_nowhere_else(server):
    code, out, err = cli(server, "runs", "show", "moved:1")
    assert (code, out) == (7, "") and "redirect" in err
    assert [path for path, _, _ in Contract.seen] == ["/api/runs/moved:1"]


def test_a_bad_token_is_exit_3(server):
    code, _, err = cli(server, "approvals", token="st_wrong")
    assert code == 3 and "401 missing or bad token" in err


def test_no_server_is_exit_7_and_names_the_url(server):
    from tools.dynamodb_local import free_port

    base = f"http://127.0.0.1:{free_port()}"
    code, _, err = cli(base, "runs", "list")
    assert code == 7 and f"cannot reach the server at {base}" in err and "STAGETRACK_URL" in err
