"""The `stagetrack` CLI (stagetrack_cli/) without a server: an injected transport answers, an
injected clock and sleep drive `runs watch`. The CLI against the running stack is
tests/e2e/test_cli.py; against a fake server (real sockets) tests/integration/test_cli_http.py."""

from __future__ import annotations

import ast
import io
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from stagetrack_cli import config, render
from stagetrack_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8000"


class FakeApi:
    """A transport: answers routed by (method, path) to a list of (status, body[, headers])
    served in order (the last one repeats); every request is recorded."""

    def __init__(self, routes: dict[tuple[str, str], list]) -> None:
        self.routes = routes
        self.requests: list[dict] = []

    def __call__(self, method, url, headers, body):
        path, _, query = url[len(BASE) :].partition("?")
        self.requests.append(
            {
                "method": method,
                "path": path,
                "query": query,
                "headers": headers,
                "body": json.loads(body) if body else None,
            }
        )
        answers = self.routes.get((method, path))
        if not answers:
            return 404, {}, json.dumps({"error": {"code": "not_found", "message": "no route"}}).encode()
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        status, payload, headers_out = (
            (answer + ({},))[:3] if isinstance(answer, tuple) else (200, answer, {})
        )
        return status, headers_out, json.dumps(payload).encode()


def run_cli(argv, api=None, env=None, stdin="", **kwargs):
    out, err = io.StringIO(), io.StringIO()
    environment = {"STAGETRACK_URL": BASE, "STAGETRACK_TOKEN": "st_secret-token", "HOME": "/nonexistent"}
    environment.update(env or {})
    code = main(
        argv,
        env={k: v for k, v in environment.items() if v is not None},
        stdin=io.StringIO(stdin),
        stdout=out,
        stderr=err,
        transport=api,
        **kwargs,
    )
    return code, out.getvalue(), err.getvalue()


def stage(name, status, **extra):
    return {
        "id": f"web:1:{name}",
        "name": name,
        "type": "BUILD",
        "status": status,
        "attempt": 1,
        "attemptCount": 1,
        "startedAt": None,
        "duration": None,
        **extra,
    }


def run(status, *stages, **extra):
    return {
        "id": "web:1",
        "pipeline": "web",
        "counter": 1,
        "status": status,
        "stages": list(stages),
        "startedAt": "2026-03-20T17:00:00.000Z",
        "duration": 30,
        **extra,
    }


# ---- what the CLI is made of ----


def test_the_cli_needs_only_the_standard_library():
    """`pip install .` installs no dependency: every import of stagetrack_cli is the standard
    library's or its own (never chalice, boto3, pynamodb, pydantic, requests or chalicelib)."""
    foreign = set()
    for path in (ROOT / "stagetrack_cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            foreign |= (
                {n.split(".")[0] for n in names}
                - set(sys.stdlib_module_names)
                - {"stagetrack_cli", "__future__"}
            )
    assert foreign == set()


def test_pyproject_installs_the_console_script():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"] == {"stagetrack": "stagetrack_cli.main:main"}
    assert meta["project"]["dependencies"] == []
    assert meta["tool"]["setuptools"]["packages"] == ["stagetrack_cli"]


def test_a_token_is_never_an_argument():
    """No --token option: a token in argv lands in shell history and `ps`."""
    code, _, err = run_cli(["--token", "st_x", "runs", "list"], FakeApi({}))
    assert code == 2 and err.startswith("usage: stagetrack")
    assert "--token" not in json.dumps([a.option_strings for a in main.__globals__["parser"]()._actions])


# ---- exit codes and messages ----


@pytest.mark.parametrize(
    ("status", "code", "exit_code", "hint"),
    [
        (401, "unauthorized", 3, "stagetrack login"),
        (403, "forbidden", 3, "scope"),
        (404, "not_found", 4, "stagetrack runs list"),
        (409, "illegal_transition", 5, "stagetrack runs show"),
        (409, "conflict", 5, "run the command again"),
        (400, "bad_request", 6, "--help"),
        (413, "payload_too_large", 6, "--help"),
        (422, "validation_failed", 6, "--help"),
        (429, "rate_limited", 7, "try again in 17 s"),
        (500, "internal_error", 7, "try again later"),
        (302, "redirect", 7, "base URL"),
    ],
)
def test_each_refusal_has_its_exit_code_and_says_what_to_do(status, code, exit_code, hint):
    api = FakeApi(
        {
            ("GET", "/api/runs/web:1"): [
                (
                    status,
                    {"error": {"code": code, "message": "nope"}} if status != 302 else {},
                    {"retry-after": "17"},
                )
            ]
        }
    )
    got, out, err = run_cli(["runs", "show", "web:1"], api)
    assert (got, out) == (exit_code, "")
    assert err.startswith(f"stagetrack: error: GET /api/runs/web:1: {status}") and hint in err
    got, out, _ = run_cli(["runs", "show", "web:1", "-o", "json"], api)
    assert got == exit_code and json.loads(out)["error"]["code"] == code


def test_an_answer_that_is_not_json_is_not_a_success():
    api = lambda method, url, headers, body: (200, {}, b"<html>login</html>")  # noqa: E731
    code, out, err = run_cli(["runs", "show", "web:1"], api)
    assert (code, out) == (7, "") and "not JSON" in err and "STAGETRACK_URL" in err


@pytest.mark.parametrize(
    ("argv", "answer"),
    [
        (["runs", "list"], {"items": [1, "x"], "nextCursor": None}),
        (["stop", "web:1"], {"id": "web:1"}),
        (["stage", "start", "web:1", "b"], {"stages": [{"name": "b"}]}),
    ],
)
def test_an_answer_of_another_shape_is_exit_7_not_a_traceback(argv, answer):
    api = FakeApi({("GET", "/api/runs"): [answer], ("GET", "/api/runs/web:1"): [answer]})
    code, _, err = run_cli(argv, api)
    assert code == 7 and "does not have the API's shape" in err and "Traceback" not in err


def test_ids_stay_one_path_segment():
    api = FakeApi({})
    code, _, _ = run_cli(["runs", "show", "../tokens?x=1#"], api)
    assert code == 4 and api.requests[0]["path"] == "/api/runs/..%2Ftokens%3Fx%3D1%23"


def test_the_token_goes_in_the_authorization_header_only():
    api = FakeApi({("GET", "/api/runs/web:1"): [run("IDLE")]})
    assert run_cli(["runs", "show", "web:1"], api)[0] == 0
    sent = api.requests[0]
    assert sent["headers"]["Authorization"] == "Bearer st_secret-token"
    assert "st_secret-token" not in sent["path"] + sent["query"]


# ---- configuration ----


def test_config_path_follows_xdg(tmp_path):
    assert config.config_path({"HOME": "/home/u"}) == Path("/home/u/.config/stagetrack/config.json")
    assert config.config_path({"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}) == Path(
        "/x/stagetrack/config.json"
    )
    # a relative XDG_CONFIG_HOME is invalid per the spec and ignored
    assert config.config_path({"HOME": "/home/u", "XDG_CONFIG_HOME": "rel"}) == Path(
        "/home/u/.config/stagetrack/config.json"
    )


def test_the_config_file_is_written_0600_in_a_0700_folder_and_read_back(tmp_path):
    path = tmp_path / "xdg" / "stagetrack" / "config.json"
    old = os.umask(0)  # even with a permissive umask
    try:
        config.write_file(path, BASE, "st_abc")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = config.load(None, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert (loaded.url, loaded.token) == (BASE, "st_abc")
    # the environment wins over the file
    loaded = config.load(
        None,
        {
            "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
            "STAGETRACK_TOKEN": "st_env",
            "STAGETRACK_URL": "https://api.example.com/api/",
        },
    )
    assert (loaded.url, loaded.token, loaded.source) == (
        "https://api.example.com/api",
        "st_env",
        "STAGETRACK_TOKEN",
    )


def test_a_config_file_others_may_read_is_refused(tmp_path):
    path = tmp_path / "stagetrack" / "config.json"
    config.write_file(path, BASE, "st_abc")
    path.chmod(0o644)
    code, _, err = run_cli(
        ["runs", "list"],
        FakeApi({}),
        env={"XDG_CONFIG_HOME": str(tmp_path), "STAGETRACK_URL": None, "STAGETRACK_TOKEN": None},
    )
    assert code == 3 and f"chmod 600 {path}" in err


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://localhost:8000/", True),
        ("http://[::1]:8000", True),
        ("https://abc.execute-api.eu-west-1.amazonaws.com/api", True),
        ("http://stagetrack.example.com", False),  # the token would cross the network in clear
        ("https://user:pw@example.com", False),
        ("https://example.com/?token=x", False),
        ("ftp://example.com", False),
        ("example.com", False),
    ],
)
def test_server_urls(url, accepted):
    if accepted:
        assert config.check_url(url) == url.rstrip("/")
    else:
        with pytest.raises(config.CliError) as e:
            config.check_url(url)
        assert e.value.exit_code == 2


def test_nothing_configured_says_how_to_configure():
    code, _, err = run_cli(
        ["runs", "list"], FakeApi({}), env={"STAGETRACK_URL": None, "STAGETRACK_TOKEN": None}
    )
    assert code == 2 and "STAGETRACK_URL" in err and "stagetrack login" in err
    code, _, err = run_cli(["runs", "list"], FakeApi({}), env={"STAGETRACK_TOKEN": None})
    assert code == 3 and "STAGETRACK_TOKEN" in err


def test_login_reads_the_token_from_stdin_checks_it_and_saves_it(tmp_path):
    api = FakeApi({("GET", "/api/runs"): [{"items": [], "nextCursor": None}]})
    env = {"XDG_CONFIG_HOME": str(tmp_path), "STAGETRACK_URL": None, "STAGETRACK_TOKEN": None}
    code, out, err = run_cli(["login", "--url", BASE], api, env=env, stdin="st_from-stdin\n")
    assert code == 0 and "st_from-stdin" not in out + err
    assert api.requests[0]["headers"]["Authorization"] == "Bearer st_from-stdin"
    assert json.loads((tmp_path / "stagetrack" / "config.json").read_text()) == {
        "url": BASE,
        "token": "st_from-stdin",
    }


def test_login_with_a_refused_token_saves_nothing(tmp_path):
    api = FakeApi({("GET", "/api/runs"): [(401, {"error": {"code": "unauthorized", "message": "bad"}})]})
    env = {"XDG_CONFIG_HOME": str(tmp_path), "STAGETRACK_TOKEN": None}
    code, _, err = run_cli(["login"], api, env=env, stdin="st_wrong\n")
    assert code == 3 and "nothing was saved" in err
    assert not (tmp_path / "stagetrack").exists()
    assert run_cli(["login"], api, env=env, stdin="\n")[0] == 3  # no token at all
    assert run_cli(["login"], api, env=env, stdin="two words\n")[0] == 3


def test_login_on_a_terminal_prompts_without_echo(tmp_path, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    asked = []
    monkeypatch.setattr("getpass.getpass", lambda prompt, stream=None: asked.append(prompt) or "st_typed")
    out, err = io.StringIO(), io.StringIO()
    api = FakeApi({("GET", "/api/runs"): [{"items": [], "nextCursor": None}]})
    code = main(
        ["login", "--url", BASE],
        env={"XDG_CONFIG_HOME": str(tmp_path)},
        stdin=Tty(),
        stdout=out,
        stderr=err,
        transport=api,
    )
    assert code == 0 and asked == ["Token: "]
    assert json.loads((tmp_path / "stagetrack" / "config.json").read_text())["token"] == "st_typed"


# ---- commands ----


def test_stage_by_name_or_id():
    stages = [
        stage("build", "IDLE"),
        stage("web:1:build", "IDLE", id="web:1:2"),
    ]  # a name that is another's id
    api = FakeApi(
        {
            ("GET", "/api/runs/web:1"): [run("IDLE", *stages)],
            ("PATCH", "/api/stages/web:1:build"): [stages[0]],
            ("PATCH", "/api/stages/web:1:2"): [stages[1]],
        }
    )
    assert run_cli(["stage", "start", "web:1", "build"], api)[0] == 0
    assert run_cli(["stage", "succeed", "web:1", "web:1:build"], api)[0] == 0  # the id wins
    assert run_cli(["stage", "fail", "web:1", "web:1:2"], api)[0] == 0
    assert run_cli(["stage", "skip", "web:1", "web:1:build"], api)[0] == 0
    patches = [(r["path"], r["body"]) for r in api.requests if r["method"] == "PATCH"]
    assert patches == [
        ("/api/stages/web:1:build", {"status": "IN_PROGRESS"}),
        ("/api/stages/web:1:build", {"status": "SUCCESS"}),
        ("/api/stages/web:1:2", {"status": "FAILURE"}),
        ("/api/stages/web:1:build", {"status": "SKIPPED"}),
    ]
    code, _, err = run_cli(["stage", "start", "web:1", "deploy"], api)
    assert code == 4 and "its stages: build, web:1:build" in err
    assert [r["method"] for r in api.requests].count("PATCH") == 4  # nothing sent for an unknown stage


def test_approve_without_a_stage_takes_the_one_waiting():
    one = FakeApi(
        {
            ("GET", "/api/runs/web:1"): [
                run("WAITING_FOR_APPROVAL", stage("build", "SUCCESS"), stage("prod", "WAITING_FOR_APPROVAL"))
            ],
            ("POST", "/api/stages/web:1:prod/approve"): [stage("prod", "IN_PROGRESS")],
        }
    )
    assert run_cli(["approve", "web:1", "--comment", "ok"], one)[0] == 0
    assert one.requests[-1]["body"] == {"comment": "ok"}
    two = FakeApi(
        {
            ("GET", "/api/runs/web:1"): [
                run(
                    "WAITING_FOR_APPROVAL",
                    stage("a", "WAITING_FOR_APPROVAL"),
                    stage("b", "WAITING_FOR_APPROVAL"),
                )
            ]
        }
    )
    code, _, err = run_cli(["reject", "web:1"], two)
    assert code == 2 and "a, b" in err and len(two.requests) == 1
    none = FakeApi({("GET", "/api/runs/web:1"): [run("IDLE", stage("a", "IDLE"))]})
    assert run_cli(["approve", "web:1"], none)[0] == 4


def test_run_create_builds_the_body_and_reads_secrets_from_the_environment():
    api = FakeApi({("POST", "/api/runs"): [(201, run("IDLE"))]})
    code, out, _ = run_cli(
        [
            "run",
            "create",
            "web",
            "--stage",
            "BUILD",
            "--stage",
            "prod=DEPLOY_PROD",
            "--manual",
            "prod",
            "--commit",
            "abc",
            "--message",
            "m",
            "--branch",
            "main",
            "--var",
            "ENV=prod",
            "--secret",
            "DEPLOY_TOKEN",
            "--idempotency-key",
            "k1",
            "-q",
        ],
        api,
        env={"DEPLOY_TOKEN": "s3cr3t"},
    )
    assert (code, out) == (0, "web:1\n")
    sent = api.requests[0]
    assert sent["body"] == {
        "pipeline": "web",
        "stages": ["BUILD", {"type": "DEPLOY_PROD", "name": "prod", "approval": "MANUAL"}],
        "commit": {"hash": "abc", "message": "m"},
        "branch": "main",
        "variables": [
            {"key": "ENV", "value": "prod"},
            {"key": "DEPLOY_TOKEN", "value": "s3cr3t", "secret": True},
        ],
    }
    assert sent["headers"]["Idempotency-Key"] == "k1"
    code, _, err = run_cli(["run", "create", "web", "--secret", "MISSING"], api)
    assert code == 2 and "export MISSING" in err and len(api.requests) == 1
    assert run_cli(["run", "create", "web", "--manual", "x", "--stage", "BUILD"], api)[0] == 2
    assert run_cli(["run", "create", "web", "--var", "NOVALUE"], api)[0] == 2
    assert run_cli(["run", "create"], api)[0] == 2
    assert len(api.requests) == 1


def test_run_create_from_a_file_on_stdin():
    api = FakeApi({("POST", "/api/runs"): [(201, run("IDLE"))]})
    code, _, _ = run_cli(
        ["run", "create", "--from-file", "-", "--branch", "b"],
        api,
        stdin='{"pipeline": "web", "stages": ["BUILD"], "timeoutSeconds": 60}',
    )
    assert code == 0 and api.requests[0]["body"] == {
        "pipeline": "web",
        "stages": ["BUILD"],
        "timeoutSeconds": 60,
        "branch": "b",
    }
    assert run_cli(["run", "create", "--from-file", "-"], api, stdin="[1]")[0] == 2
    assert run_cli(["run", "create", "--from-file", "-"], api, stdin="{nope")[0] == 2


def test_list_all_pages_follows_the_cursor_and_refuses_a_loop():
    api = FakeApi(
        {
            ("GET", "/api/runs"): [
                {"items": [run("SUCCESS")], "nextCursor": "c1"},
                {"items": [run("FAILURE", id="web:0")], "nextCursor": None},
            ]
        }
    )
    code, out, _ = run_cli(["runs", "list", "--pipeline", "web", "--all", "-o", "json"], api)
    assert code == 0 and [r["id"] for r in json.loads(out)["items"]] == ["web:1", "web:0"]
    assert [r["query"] for r in api.requests] == ["pipeline=web", "pipeline=web&cursor=c1"]
    looping = FakeApi({("GET", "/api/runs"): [{"items": [], "nextCursor": "same"}]})
    code, _, err = run_cli(["runs", "list", "--all"], looping)
    assert code == 7 and "same cursor" in err and len(looping.requests) == 2


def test_one_page_tells_a_person_how_to_get_the_next():
    api = FakeApi({("GET", "/api/runs"): [{"items": [run("SUCCESS")], "nextCursor": "c1"}]})
    code, out, err = run_cli(["runs", "list", "--status", "SUCCESS", "--limit", "1"], api)
    assert code == 0 and api.requests[0]["query"] == "status=SUCCESS&limit=1"
    assert out.splitlines()[1].split()[:2] == ["web:1", "SUCCESS"]
    assert "--cursor c1" in err


def test_terminal_escapes_from_the_server_are_not_printed():
    """A branch or stage name is set by whoever sends a webhook: printed raw, an escape sequence
    could retitle the terminal, move the cursor or hide lines."""
    hostile = "main\x1b]0;pwned\x07\x1b[2J\u202eevil\r\nfake"
    api = FakeApi(
        {
            ("GET", "/api/runs"): [{"items": [run("SUCCESS", branch=hostile)], "nextCursor": None}],
            ("GET", "/api/runs/web:1"): [run("SUCCESS", stage(hostile, "SUCCESS"), branch=hostile)],
        }
    )
    for argv in (["runs", "list"], ["runs", "show", "web:1"], ["runs", "watch", "web:1"]):
        code, out, _ = run_cli(argv, api, sleep=lambda s: None)
        assert (
            code == 0 and "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\r" not in out
        )
        assert "main?]0;pwned?" in out


# ---- runs watch ----


def watch_api(*answers):
    return FakeApi({("GET", "/api/runs/web:1"): list(answers)})


def test_watch_polls_until_the_run_ends():
    slept: list[float] = []
    api = watch_api(
        run("IN_PROGRESS", stage("build", "IN_PROGRESS")),
        run("IN_PROGRESS", stage("build", "IN_PROGRESS")),
        run("SUCCESS", stage("build", "SUCCESS")),
    )
    code, out, _ = run_cli(["runs", "watch", "web:1", "--interval", "5"], api, sleep=slept.append)
    assert code == 0 and slept == [5.0, 5.0] and len(api.requests) == 3
    # not a terminal: a new frame only when a status changes
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("build")] == [
        ["build", "IN_PROGRESS"],
        ["build", "SUCCESS"],
    ]


@pytest.mark.parametrize(
    ("status", "exit_code"),
    [("SUCCESS", 0), ("SKIPPED", 0), ("FAILURE", 1), ("CANCELLED", 1), ("TIMED_OUT", 1)],
)
def test_watch_exit_code_is_the_runs_outcome(status, exit_code):
    code, out, _ = run_cli(
        ["runs", "watch", "web:1", "-o", "json"], watch_api(run(status)), sleep=lambda s: None
    )
    assert code == exit_code and json.loads(out)["status"] == status


def test_watch_gives_up_at_its_timeout():
    now = [100.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    code, _, err = run_cli(
        ["runs", "watch", "web:1", "--interval", "2", "--timeout", "5"],
        watch_api(run("WAITING_FOR_APPROVAL")),
        sleep=sleep,
        clock=lambda: now[0],
    )
    assert code == 8 and slept == [2.0, 2.0, 1.0] and "still WAITING_FOR_APPROVAL after 5 s" in err


def test_watch_waits_as_long_as_a_429_says():
    slept = []
    api = watch_api(
        (429, {"error": {"code": "rate_limited", "message": "x"}}, {"retry-after": "17"}),
        (429, {"error": {"code": "rate_limited", "message": "x"}}, {"retry-after": "9999"}),
        (429, {"error": {"code": "rate_limited", "message": "x"}}, {"retry-after": "soon"}),
        run("SUCCESS"),
    )
    code, _, _ = run_cli(["runs", "watch", "web:1", "--interval", "2"], api, sleep=slept.append)
    assert code == 0 and slept == [17.0, 60.0, 2.0]


def test_watch_rides_out_a_few_failed_polls_but_not_a_refusal():
    api = watch_api(
        (503, {"error": {"code": "unavailable", "message": "x"}}),
        (429, {"error": {"code": "rate_limited", "message": "x"}}),
        run("SUCCESS"),
    )
    code, _, err = run_cli(["runs", "watch", "web:1"], api, sleep=lambda s: None)
    assert code == 0 and "retrying (2/5)" in err
    down = watch_api((503, {"error": {"code": "unavailable", "message": "x"}}))
    assert run_cli(["runs", "watch", "web:1"], down, sleep=lambda s: None)[0] == 7
    assert len(down.requests) == 6
    gone = watch_api((404, {"error": {"code": "not_found", "message": "x"}}))
    assert run_cli(["runs", "watch", "web:1"], gone, sleep=lambda s: None)[0] == 4 and len(gone.requests) == 1


def test_watch_redraws_in_place_on_a_terminal():
    class Tty(io.StringIO):
        encoding = "utf-8"

        def isatty(self):
            return True

    out = Tty()
    api = watch_api(
        run("IN_PROGRESS", stage("build", "IN_PROGRESS")), run("SUCCESS", stage("build", "SUCCESS"))
    )
    code = main(
        ["runs", "watch", "web:1"],
        env={"STAGETRACK_URL": BASE, "STAGETRACK_TOKEN": "t"},
        stdout=out,
        stderr=io.StringIO(),
        transport=api,
        sleep=lambda s: None,
    )
    assert code == 0 and out.getvalue().count("\x1b[H\x1b[2J") == 2


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "x"])
def test_watch_interval_must_be_positive(value):
    assert run_cli(["runs", "watch", "web:1", "--interval", value], watch_api(run("SUCCESS")))[0] == 2


# ---- rendering ----


def test_timeline_puts_stages_on_one_time_axis():
    text = render.timeline(
        run(
            "IN_PROGRESS",
            stage("build", "SUCCESS", startedAt="2026-03-20T17:00:00.000Z", duration=10),
            stage(
                "test",
                "IN_PROGRESS",
                startedAt="2026-03-20T17:00:10.000Z",
                duration=30,
                timesOutAt="2026-03-20T17:00:50.000Z",
            ),
            stage("prod", "IDLE"),
            duration=40,
        ),
        unicode=False,
    )
    bars = {
        line.split()[0]: line[line.index("|") + 1 : line.rindex("|")]
        for line in text.splitlines()
        if line.startswith(("build", "test", "prod"))
    }
    assert bars["build"] == "#" * 10 + " " * 30  # 10 s of 40
    assert bars["test"] == " " * 10 + "#" * 29 + ">"  # from 10 s to 40 s, still growing
    assert bars["prod"] == " " * 40
    assert "0s" in text and "40s" in text


def test_timeline_draws_earlier_attempts_as_lighter_bars():
    build = stage(
        "build",
        "SUCCESS",
        startedAt="2026-03-20T17:00:20.000Z",
        duration=20,
        attempt=2,
        attempts=[
            {"attempt": 1, "status": "FAILURE", "startedAt": "2026-03-20T17:00:00.000Z", "duration": 10}
        ],
    )
    text = render.timeline(run("SUCCESS", build, duration=40), unicode=False)
    row = next(line for line in text.splitlines() if line.startswith("build"))
    assert row.split()[1:3] == ["SUCCESS", "#2"]
    assert row[row.index("|") + 1 : row.rindex("|")] == "-" * 10 + " " * 10 + "#" * 20


def test_watch_attempts_asks_for_them():
    api = watch_api(run("SUCCESS"))
    assert run_cli(["runs", "watch", "web:1", "--attempts"], api)[0] == 0
    assert api.requests[0]["query"] == "include=attempts"


def test_clean_and_duration():
    assert render.clean("a\x1b[31mb\nc") == "a?[31mb?c"
    assert render.clean("abcdef", 4) == "abc…"
    assert [render.duration(v) for v in (None, 0, 1.5, 12, 75, 3725, True)] == [
        "-",
        "0s",
        "1.5s",
        "12s",
        "1m15s",
        "1h02m",
        "-",
    ]


def test_run_header_shows_where_the_run_came_from():
    text = render.run_details(
        run(
            "SUCCESS",
            branch="main",
            actor="octocat",
            source="github",
            environment="production",
            sourceUrl="https://github.com/o/r/actions/runs/1",
            commit={"hash": "abc1234", "message": "m"},
        )
    )
    assert text.splitlines()[1:4] == [
        "  pipeline web  branch main  actor octocat  source github  environment production",
        "  commit abc1234  m",
        "  https://github.com/o/r/actions/runs/1",
    ]


def test_a_run_shows_its_eta_and_an_overrunning_stage():
    stage = {"name": "build", "id": "web:1:1", "type": "BUILD", "status": "IN_PROGRESS", "attempt": 1,
             "startedAt": "2026-03-20T12:00:00.000Z", "duration": 95,
             "overrunningAt": "2026-03-20T12:01:30.000Z", "typicalSeconds": 60.0}
    text = render.run_details(run("IN_PROGRESS", eta="2026-03-20T12:05:00.000Z", stages=[stage]))
    assert "  eta 2026-03-20T12:05:00.000Z  (from its stages' recent p50)" in text.splitlines()
    assert "build: overrunning since 2026-03-20T12:01:30.000Z (typically 1m00s)" in text.splitlines()
    done = render.run_details(run("SUCCESS", eta=None, stages=[{**stage, "status": "SUCCESS"}]))
    assert "eta" not in done and "overrunning" not in done


def test_a_run_of_a_concurrency_group_says_so_and_whether_it_waits():
    assert "  concurrency group deploy  (waits for the run holding it)" in render.run_details(
        run("QUEUED", concurrencyGroup="deploy")).splitlines()
    idle = render.run_details(run("IDLE", concurrencyGroup="deploy"))
    assert "  concurrency group deploy" in idle.splitlines()
    assert "concurrency group" not in render.run_details(run("IDLE"))
    api = FakeApi({("POST", "/api/runs"): [(201, run("QUEUED"))]})
    assert run_cli(["run", "create", "web", "--concurrency-group", "deploy", "--stop-grace", "60", "-q"],
                   api)[0] == 0
    assert api.requests[0]["body"] == {"pipeline": "web", "concurrencyGroup": "deploy",
                                       "stopGraceSeconds": 60}


def test_stagetrack_config_names_another_file_and_logout_removes_it(tmp_path):
    path = tmp_path / "elsewhere.json"
    api = FakeApi({("GET", "/api/runs"): [{"items": [], "nextCursor": None}]})
    env = {"STAGETRACK_CONFIG": str(path), "STAGETRACK_URL": None, "STAGETRACK_TOKEN": None}
    assert run_cli(["login", "--url", BASE], api, env=env, stdin="st_t\n")[0] == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run_cli(["runs", "list"], api, env=env)[0] == 0
    assert api.requests[-1]["headers"]["Authorization"] == "Bearer st_t"
    code, _, err = run_cli(["logout"], api, env=env)
    assert code == 0 and not path.exists() and "revokes" in err
    assert run_cli(["runs", "list"], api, env=env)[0] == 2  # nothing configured any more


def test_approve_shows_how_many_approvals_the_gate_has_and_who_gave_them():
    decided = stage("prod", "WAITING_FOR_APPROVAL",
                    approvalPolicy={"required": 2, "approvers": ["group:release"]},
                    approvals=[{"decision": "APPROVED", "by": "alice", "at": "2026-03-20T17:00:01.000Z",
                                "comment": "lgtm\x1b[2J", "attempt": 1}])
    waiting = run("WAITING_FOR_APPROVAL", stage("prod", "WAITING_FOR_APPROVAL"))
    api = FakeApi({("GET", "/api/runs/web:1"): [waiting],
                   ("POST", "/api/stages/web:1:prod/approve"): [decided]})
    code, out, _ = run_cli(["approve", "web:1", "prod"], api)
    assert code == 0
    assert out.endswith(
        "\n1 of 2 approvals (alice)\n  approved by alice at 2026-03-20T17:00:01.000Z: lgtm?[2J\n"
        "  may decide: group:release\n")


def test_a_waiting_policy_gate_says_who_may_decide_and_a_refused_approver_is_told_why():
    gate = stage("prod", "WAITING_FOR_APPROVAL",
                 approvalPolicy={"required": 2, "approvers": ["group:release", "carol"],
                                 "groups": {"release": ["alice", "bob\x1b[2J"]}, "preventSelfApproval": True},
                 approvals=[])
    shown = render.run_details(run("WAITING_FOR_APPROVAL", gate))
    assert ("prod: 0 of 2 approvals\n"
            "  may decide: group:release (alice, bob?[2J), carol; not the run's creator\n") in shown
    assert render.approvers({"approvers": [], "required": 1}) == "any operate token"
    refusal = {"error": {"code": "not_an_approver", "message": "'dave' is not an allowed approver"}}
    api = FakeApi({("GET", "/api/runs/web:1"): [run("WAITING_FOR_APPROVAL", gate)],
                   ("POST", "/api/stages/web:1:prod/approve"): [(403, refusal)]})
    code, _, err = run_cli(["approve", "web:1", "--comment", "ok"], api)
    assert code == 3 and "not an allowed approver" in err and "lists its approvers" in err
    assert api.requests[-1]["body"] == {"comment": "ok"}


def test_a_queued_run_shows_its_place_in_line():
    queued = run("QUEUED", concurrencyGroup="deploy",
                 queue={"group": "deploy", "holder": "web:7", "position": 2, "waiting": 3})
    assert "  concurrency group deploy  (waits: 2 of 3 in line, behind web:7)" in \
        render.run_details(queued).splitlines()


def test_pipelines_concurrency_shows_the_setting_or_puts_a_mode():
    status = {"name": "web", "paused": False, "locked": True, "lockedBy": "web:4", "schedulable": False,
              "concurrency": {"mode": "QUEUED", "group": None}}
    api = FakeApi({("GET", "/api/pipelines/web/status"): [status],
                   ("PUT", "/api/pipelines/web/concurrency"): [status]})
    code, out, _ = run_cli(["pipelines", "concurrency", "web"], api)
    assert code == 0 and api.requests[-1]["method"] == "GET"
    assert out.splitlines()[1:3] == ["  concurrency QUEUED  group web", "  locked by web:4"]
    code, _, _ = run_cli(["pipelines", "concurrency", "web", "superseded", "--group", "deploys"], api)
    assert code == 0 and api.requests[-1]["method"] == "PUT"
    assert api.requests[-1]["body"] == {"mode": "SUPERSEDED", "group": "deploys"}
    asked = len(api.requests)
    assert run_cli(["pipelines", "concurrency", "web", "SERIAL"], api)[0] == 2  # argparse: a usage error
    assert run_cli(["pipelines", "concurrency", "web", "--group", "g"], api)[0] == 2
    assert len(api.requests) == asked  # refused before any request


def test_schedules_enable_and_disable_patch_enabled_and_list_shows_the_last_skip():
    row = {"id": "sch_1", "cron": "0 9 * * *", "timeZone": "UTC", "enabled": True, "nextFireAt": None,
           "lastRunId": None, "lastSkipped": {"at": "2026-12-01T09:00:00.000Z", "reason": "pipeline_paused",
                                              "message": "paused"}}
    api = FakeApi({("PATCH", "/api/pipelines/web/schedules/sch_1"): [row],
                   ("GET", "/api/pipelines/web/schedules"): [{"items": [row]}]})
    for verb, enabled in (("disable", False), ("enable", True)):
        assert run_cli(["schedules", verb, "web", "sch_1"], api)[0] == 0
        assert api.requests[-1]["body"] == {"enabled": enabled}
    code, out, _ = run_cli(["schedules", "list", "web"], api)
    assert code == 0 and "2026-12-01T09:00:00.000Z pipeline_paused" in out


def test_schedules_create_sends_cron_zone_and_variables_and_prints_the_schedule():
    created = {"id": "sch_1", "cron": "0 9 * * MON-FRI", "timeZone": "Europe/Berlin", "enabled": True,
               "nextFireAt": "2026-12-01T08:00:00.000Z", "lastRunId": None}
    api = FakeApi({("POST", "/api/pipelines/web/schedules"): [(201, created)]})
    code, out, _ = run_cli(["schedules", "create", "web", "0 9 * * MON-FRI", "--time-zone", "Europe/Berlin",
                            "--var", "TARGET=prod", "--var", "EMPTY=", "--description", "nightly"], api)
    assert code == 0
    assert api.requests[0]["body"] == {"cron": "0 9 * * MON-FRI", "timeZone": "Europe/Berlin",
                                       "variables": {"TARGET": "prod", "EMPTY": ""}, "description": "nightly"}
    assert "sch_1" in out and "2026-12-01T08:00:00.000Z" in out and "yes" in out


def test_schedules_create_rejects_a_variable_without_equals_before_any_request():
    api = FakeApi({})
    code, _, err = run_cli(["schedules", "create", "web", "* * * * *", "--var", "TARGET"], api)
    assert code != 0 and "KEY=VALUE" in err
    assert api.requests == []


def test_schedules_list_and_delete_quote_the_path_segments():
    row = {"id": "sch_1", "cron": "* * * * *", "timeZone": "UTC", "enabled": False, "nextFireAt": None,
           "lastRunId": "a b:3"}
    api = FakeApi({("GET", "/api/pipelines/a%20b/schedules"): [{"items": [row], "nextCursor": None}],
                   ("DELETE", "/api/pipelines/a%20b/schedules/sch_1"): [row]})
    code, out, _ = run_cli(["schedules", "list", "a b"], api)
    assert code == 0 and "sch_1" in out and " no " in f" {out} ".replace("\n", " ")
    code, _, _ = run_cli(["schedules", "delete", "a b", "sch_1"], api)
    assert code == 0 and api.requests[-1]["method"] == "DELETE"


# ---- insights ----


def test_insights_asks_the_route_with_the_filters_and_prints_a_summary():
    from tests.fixtures.insights import sample

    api = FakeApi({("GET", "/api/insights"): [sample()]})
    code, out, err = run_cli(["insights", "--pipeline", "web", "--stage", "build", "--from", "2026-03-01",
                              "--to", "2026-03-03", "--granularity", "day"], api)
    assert (code, err) == (0, "")
    from urllib.parse import parse_qs

    assert parse_qs(api.requests[0]["query"]) == {
        "pipeline": ["web"], "stage": ["build"], "from": ["2026-03-01"], "to": ["2026-03-03"],
        "granularity": ["day"]}
    assert out.startswith("insights of pipeline web, stage build, 2026-03-01 .. 2026-03-03\n")
    assert "runs          40 total: 30 success, 6 failure, 2 cancelled, 2 timed out" in out
    assert "success rate  78.9%" in out  # 30 / (40 - 2)
    assert "duration      p50 4m10s  p90 10m10s  p95 12m22s  mean 5m01s" in out
    assert "queue         p50 4s  p95 1m35s" in out and "MTTR          1h30m" in out
    assert "deployment frequency  2.5 per day" in out and "lead time p50         2h00m" in out
    assert "change failure rate   10.0%" in out and "time to restore p50   1h00m" in out
    slowest = out.split("slowest stages (by p95)\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in slowest] == ["STAGE", "integration-tests", "build", "deploy"]
    flakiest = out.split("flakiest stages (failed, then passed on a retry)\n")[1]
    flakiest = flakiest.split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in flakiest] == ["STAGE", "integration-tests", "deploy"]  # build: 0
    assert "integration-tests  38    80.0%    2m20s  8m40s  12.5%  6" in flakiest
    series = out.split("series (per day)\n")[1].splitlines()
    assert series[1].startswith("2026-03-01  25    80.0%    4m00s  11m40s  ") and series[1].endswith("#" * 30)
    assert series[2].rstrip() == "2026-03-02  0     -        -      -"  # an empty day: no bar, no rate
    assert series[3].endswith(" " + "#" * 18)  # 15 of 25 runs: 18 of 30 columns


def test_insights_without_filters_sends_none_and_json_is_the_answer_as_is():
    from tests.fixtures.insights import empty

    api = FakeApi({("GET", "/api/insights"): [empty()]})
    code, out, _ = run_cli(["insights", "-o", "json"], api)
    assert code == 0 and api.requests[0]["query"] == "" and json.loads(out) == empty()
    code, out, _ = run_cli(["insights"], api)
    assert code == 0 and out.startswith("insights of every pipeline you see, ")
    assert "success rate  -" in out and "stages: none in this window" in out
    assert "lead time p50         -" in out and "deployment frequency  0 per day" in out


@pytest.mark.parametrize(("argv", "hint"), [
    (["insights", "--from", "yesterday"], "--from 2026-03-01"),
    (["insights", "--from", "2026-03-01T12:00:00Z"], "YYYY-MM-DD"),  # the route reads days
    (["insights", "--to", "2026-13-01"], "--to 2026-03-01"),
    (["insights", "--granularity", "month"], "invalid choice"),
])
def test_insights_refuses_bad_arguments_before_asking(argv, hint):
    api = FakeApi({})
    code, out, err = run_cli(argv, api)
    assert (code, out, api.requests) == (2, "", []) and hint in err


@pytest.mark.parametrize(("status", "exit_code"), [(401, 3), (403, 3), (404, 4), (400, 6), (429, 7), (503,
                                                                                                      7)])
def test_insights_refusals_have_the_documented_exit_codes(status, exit_code):
    api = FakeApi({("GET", "/api/insights"): [(status, {"error": {"code": "x", "message": "no"}})]})
    code, out, err = run_cli(["insights", "--pipeline", "secret-pipeline"], api)
    assert (code, out) == (exit_code,
                           "") and err.startswith(f"stagetrack: error: GET /api/insights: {status}")


@pytest.mark.parametrize("answer", [{"items": []}, [1, 2], {"runs": {"total": "x"},
                                                            "stages": [{"duration": 3}]}])
def test_insights_answer_of_another_shape_is_exit_7_not_a_traceback(answer):
    code, out, err = run_cli(["insights"], FakeApi({("GET", "/api/insights"): [answer]}))
    assert code in (0, 7) and "Traceback" not in err
    if not (isinstance(answer, dict) and isinstance(answer.get("runs"), dict)):
        assert code == 7 and "not an insights answer" in err


def test_insights_stage_names_from_the_server_cannot_write_escapes():
    from tests.fixtures.insights import sample

    answer = sample()
    answer["stages"][0]["name"] = "evil\x1b]0;pwned\x07"
    code, out, _ = run_cli(["insights"], FakeApi({("GET", "/api/insights"): [answer]}))
    assert code == 0 and "\x1b" not in out and "evil?]0;pwned?" in out


def test_the_insights_example_in_docs_cli_is_what_the_cli_prints():
    from tests.fixtures.insights import sample

    text = (ROOT / "docs" / "cli.md").read_text()
    command = "$ stagetrack insights --pipeline web --from 2026-03-01 --to 2026-03-03\n"
    shown = text.split(command)[1].split("```")[0]
    assert shown == render.insights(sample(), "pipeline web", unicode=True)


def test_a_failure_retried_automatically_shows_when_the_retry_starts():
    policy = {"max": 2, "when": ["FAILURE"], "backoffSeconds": 30}
    pending = stage("build", "RETRY_PENDING", attempt=2, retry=policy, autoRetries=1,
                    nextRetryAt="2026-03-20T17:00:30.000Z", retryReason="FAILURE")
    running = run("IN_PROGRESS", stage("build", "IN_PROGRESS"))
    api = FakeApi({("GET", "/api/runs/web:1"): [running], ("PATCH", "/api/stages/web:1:build"): [pending]})
    code, out, err = run_cli(["stage", "fail", "web:1", "build"], api)
    assert code == 0, err
    assert out.endswith("\nbuild: retry 1 of 2 at 2026-03-20T17:00:30.000Z after FAILURE\n")
    used = stage("build", "FAILURE", attempt=3, retry={"max": 2}, autoRetries=2)
    api = FakeApi({("GET", "/api/runs/web:1"): [running], ("PATCH", "/api/stages/web:1:build"): [used]})
    out = run_cli(["stage", "fail", "web:1", "build"], api)[1]
    assert out.endswith("\nbuild: 2 of 2 automatic retries\n")


# ---- stop: graceful, with its grace period ----


@pytest.mark.parametrize(("argv", "sent"), [
    (["stop", "web:1"], None),
    (["stop", "web:1", "--reason", "superseded", "--grace", "30"],
     {"reason": "superseded", "graceSeconds": 30}),
    (["stop", "web:1", "--grace", "0"], {"graceSeconds": 0}),
])
def test_stop_sends_the_grace_period_and_shows_until_when_stages_may_finish(argv, sent):
    stopping = {"mode": "STOP", "graceSeconds": 30, "graceUntil": "2026-03-20T17:01:00.000Z"}
    api = FakeApi({("GET", "/api/runs/web:1"): [run("IN_PROGRESS")],
                   ("POST", "/api/pipelines/web/runs/1/stop"): [run("CANCELLING", stopping=stopping)]})
    code, out, _ = run_cli(argv, api)
    assert code == 0 and api.requests[-1]["body"] == sent
    assert "CANCELLING" in out and "may finish until 2026-03-20T17:01:00.000Z" in out


# ---- cancel --force: a force-cancel of the run ----


@pytest.mark.parametrize(("argv", "sent"), [
    (["cancel", "web:1", "--force"], {"force": True}),
    (["cancel", "web:1", "--force", "--reason", "runner gone"], {"reason": "runner gone", "force": True}),
    (["cancel", "web:1"], None),
])
def test_cancel_force_asks_for_a_force_cancel_and_says_so(argv, sent):
    cancellation = {"by": "ops", "reason": "runner gone", "force": True}
    if sent is None:
        cancellation = {"by": "ops", "reason": None}
    api = FakeApi({("POST", "/api/runs/web:1/cancel"): [run("CANCELLED", cancellation=cancellation)]})
    code, out, err = run_cli(argv, api)
    assert code == 0, err
    assert api.requests[-1]["method"] == "POST" and api.requests[-1]["body"] == sent
    assert ("force-cancelled by ops: runner gone" in out) == (sent is not None)


def test_cancel_force_of_a_stage_is_a_usage_error_and_sends_nothing():
    api = FakeApi({})
    code, _, err = run_cli(["cancel", "web:1", "build", "--force"], api)
    assert code == 2 and "--force cancels a whole run" in err and api.requests == []


def test_a_finally_stage_and_what_ends_an_active_stage_early_are_noted_under_the_stages():
    stopping = run("CANCELLING",
                   stage("build", "IN_PROGRESS", cancelsAt="2026-03-20T17:10:00.000Z",
                         runDeadline="2026-03-20T18:00:00.000Z"),
                   stage("cleanup", "IDLE", always=True), stage("deploy", "SKIPPED"))
    lines = render.run_details(stopping).splitlines()
    assert "build: cancelled at 2026-03-20T17:10:00.000Z unless it ends (stop); " \
           "run deadline 2026-03-20T18:00:00.000Z" in lines
    assert "cleanup: finally stage (runs after a failure, stop or cancel too)" in lines
    assert not any(line.startswith("deploy:") for line in lines)


# ---- insights rebuild ----

def rebuild_record(status="running", **extra):
    return {"id": "rb_1", "status": status, "startedAt": "2026-03-20T17:00:00.000Z",
            "updatedAt": "2026-03-20T17:00:00.000Z", "by": "ops", "finishedAt": None, "pipelinesRebuilt": 0,
            "runsRead": 0, "itemsWritten": 0, "failure": None, **extra}


DONE = rebuild_record("succeeded", finishedAt="2026-03-20T17:01:00.000Z", pipelinesRebuilt=2, runsRead=40,
                      itemsWritten=90)


def test_insights_rebuild_starts_it_and_prints_its_record():
    api = FakeApi({("POST", "/api/insights/rebuild"): [(202, rebuild_record())]})
    code, out, err = run_cli(["insights", "rebuild"], api)
    assert code == 0 and [r["method"] for r in api.requests] == ["POST"]
    assert api.requests[0]["body"] is None  # the route takes no body
    assert out == ("insights rebuild rb_1: running\n  started   2026-03-20T17:00:00.000Z by ops\n"
                   "  progress  2026-03-20T17:00:00.000Z\n"
                   "  0 pipeline(s) rebuilt, 0 run(s) read, 0 item(s) written\n")


def test_insights_rebuild_wait_polls_until_it_ends():
    slept, now = [], [0.0]

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    unavailable = (503, {"error": {"code": "unavailable", "message": "x"}})
    api = FakeApi({("POST", "/api/insights/rebuild"): [(202, rebuild_record())],
                   ("GET", "/api/insights/rebuild"): [rebuild_record(pipelinesRebuilt=1, runsRead=20),
                                                      unavailable, DONE]})
    code, out, err = run_cli(["insights", "rebuild", "--wait", "--interval", "5", "-o", "json"], api,
                             sleep=sleep, clock=lambda: now[0])
    assert code == 0 and json.loads(out) == DONE
    assert [r["method"] for r in api.requests] == ["POST", "GET", "GET", "GET"] and slept == [5, 5, 5]
    assert "retrying (1/5)" in err


def test_insights_rebuild_wait_on_a_failed_rebuild_is_exit_1_with_its_failure():
    failed = rebuild_record("failed", failure="RuntimeError: the table is gone",
                            finishedAt="2026-03-20T17:00:05.000Z")
    api = FakeApi({("POST", "/api/insights/rebuild"): [(202, rebuild_record())],
                   ("GET", "/api/insights/rebuild"): [failed]})
    code, out, _ = run_cli(["insights", "rebuild", "--wait"], api, sleep=lambda s: None)
    assert code == 1 and "insights rebuild rb_1: failed\n" in out
    assert "  failure: RuntimeError: the table is gone\n" in out


def test_insights_rebuild_wait_gives_up_at_its_timeout_and_sees_a_replacement():
    now = [0.0]
    api = FakeApi({("POST", "/api/insights/rebuild"): [(202, rebuild_record())],
                   ("GET", "/api/insights/rebuild"): [rebuild_record()]})
    code, out, err = run_cli(["insights", "rebuild", "--wait", "--timeout", "3", "--interval", "2"], api,
                             sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert code == 8 and "rebuild rb_1 is still running after 3 s" in err
    api = FakeApi({("POST", "/api/insights/rebuild"): [(202, rebuild_record())],
                   ("GET", "/api/insights/rebuild"): [rebuild_record(id="rb_2")]})
    code, _, err = run_cli(["insights", "rebuild", "--wait"], api, sleep=lambda s: None)
    assert code == 1 and "rebuild rb_1 was replaced by rb_2" in err


def test_insights_rebuild_while_one_runs_is_exit_5_with_a_hint_and_status_only_reads():
    busy = (409, {"error": {"code": "rebuild_running", "message": "a rebuild is running"}})
    code, _, err = run_cli(["insights", "rebuild"], FakeApi({("POST", "/api/insights/rebuild"): [busy]}))
    assert code == 5 and "stagetrack insights rebuild --status" in err
    api = FakeApi({("GET", "/api/insights/rebuild"): [DONE]})
    code, out, _ = run_cli(["insights", "rebuild", "--status"], api)
    assert code == 0 and [r["method"] for r in api.requests] == ["GET"]
    assert "  2 pipeline(s) rebuilt, 40 run(s) read, 90 item(s) written\n" in out


@pytest.mark.parametrize(("status", "exit_code"), [(401, 3), (403, 3), (404, 4)])
def test_insights_rebuild_refusals_have_the_documented_exit_codes(status, exit_code):
    api = FakeApi({("POST", "/api/insights/rebuild"): [(status, {"error": {"code": "x", "message": "no"}})]})
    code, out, err = run_cli(["insights", "rebuild"], api)
    assert (code, out) == (exit_code, "")
    assert err.startswith(f"stagetrack: error: POST /api/insights/rebuild: {status}")
