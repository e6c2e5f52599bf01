"""The `stagetrack` CLI against the running stack (chalice local over DynamoDB Local, started as
`make run` starts it), as its users run it: the console script that `pip install .` writes, run
by a Python without site-packages (`python -S`), so the test fails if the CLI needs anything but
the standard library and its own package (no chalice, boto3, pynamodb, pydantic, requests)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import requests

from tests.fixtures.cli import install_cli

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.ddb_local


@pytest.fixture(scope="session")
def installed_cli(tmp_path_factory) -> tuple[Path, Path]:
    """`pip install .` into a folder of its own: (the console script, the folder)."""
    target = tmp_path_factory.mktemp("cli-install")
    return install_cli(target, tmp_path_factory.mktemp("cli-build")), target


@pytest.fixture
def cli(installed_cli, chalice_local, tmp_path):
    """run(*args, token=..., input=..., env=...) -> CompletedProcess of the installed `stagetrack`,
    configured by STAGETRACK_URL and STAGETRACK_TOKEN (the admin token unless told otherwise), with
    a HOME of its own (no config file unless a test writes one)."""
    script, target = installed_cli
    base, admin_token, _ = chalice_local
    home = tmp_path / "home"
    home.mkdir()

    def run(
        *args: str,
        token: str | None = admin_token,
        input: str | None = None,
        env: dict | None = None,
        url: str | None = base,
    ) -> subprocess.CompletedProcess:
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "PYTHONPATH": str(target),
            "LANG": "C.UTF-8",
        }
        if url:
            environment["STAGETRACK_URL"] = url
        if token:
            environment["STAGETRACK_TOKEN"] = token
        environment.update(env or {})
        return subprocess.run(
            [sys.executable, "-S", str(script), *args],
            capture_output=True,
            text=True,
            input=input,
            env=environment,
            cwd=tmp_path,
            timeout=60,
        )

    run.base, run.admin, run.home = base, admin_token, home  # type: ignore[attr-defined]
    return run


def pipeline() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_drives_a_run_from_create_to_success(cli):
    name = pipeline()
    run_id = ok(
        cli(
            "run",
            "create",
            name,
            "--stage",
            "BUILD",
            "--stage",
            "tests=UNIT_TEST",
            "--branch",
            "main",
            "--commit",
            "0123456789abcdef",
            "--message",
            "fix the build",
            "--var",
            "ENV=prod",
            "-q",
        )
    ).strip()
    assert run_id == f"{name}:1"
    ok(cli("stage", "start", run_id, "BUILD"))
    ok(cli("stage", "succeed", run_id, "BUILD"))
    shown = json.loads(ok(cli("runs", "show", run_id, "--output", "json")))
    tests_id = next(s["id"] for s in shown["stages"] if s["name"] == "tests")
    ok(cli("stage", "start", run_id, tests_id))  # a stage by its id as well as by its name
    table = ok(cli("stage", "succeed", run_id, "tests"))
    assert table.splitlines()[0].split() == [
        "STAGE",
        "ID",
        "TYPE",
        "STATUS",
        "ATTEMPT",
        "STARTED",
        "DURATION",
    ]
    assert table.splitlines()[1].split()[:4] == ["tests", tests_id, "UNIT_TEST", "SUCCESS"]

    run = json.loads(ok(cli("runs", "show", run_id, "-o", "json")))
    assert (run["id"], run["status"], [s["status"] for s in run["stages"]]) == (
        run_id,
        "SUCCESS",
        ["SUCCESS", "SUCCESS"],
    )
    assert run["commit"]["hash"] == "0123456789abcdef" and run["variables"] == {"ENV": "prod"}
    assert (run["branch"], run["source"]) == ("main", "native")

    watched = cli("runs", "watch", run_id)
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert lines[0].startswith(f"run {run_id}  SUCCESS")
    assert [line.split()[:2] for line in lines if line.startswith(("BUILD ", "tests "))] == [
        ["BUILD", "SUCCESS"],
        ["tests", "SUCCESS"],
    ]

    listed = ok(cli("runs", "list", "--pipeline", name))
    assert [line.split()[:2] for line in listed.splitlines()] == [["RUN", "STATUS"], [run_id, "SUCCESS"]]
    page = json.loads(ok(cli("runs", "list", "--pipeline", name, "-o", "json")))
    assert [r["id"] for r in page["items"]] == [run_id] and page["nextCursor"] is None


def test_watch_exits_1_when_the_run_fails_and_prints_json_for_scripts(cli):
    name = pipeline()
    run_id = ok(cli("run", "create", name, "--stage", "BUILD", "--stage", "UNIT_TEST", "-q")).strip()
    ok(cli("stage", "start", run_id, "BUILD"))
    ok(cli("stage", "fail", run_id, "BUILD"))
    watched = cli("runs", "watch", run_id, "--output", "json")
    assert watched.returncode == 1, watched.stderr
    final = json.loads(watched.stdout)
    assert final["status"] == "FAILURE" and [s["status"] for s in final["stages"]] == ["FAILURE", "IDLE"]


def test_watch_follows_a_live_run_until_it_ends(cli, installed_cli, chalice_local):
    """The watch is started while the stage runs, prints that, and ends (0) once the test finishes
    the stage: it saw the change without being restarted."""
    name = pipeline()
    run_id = ok(cli("run", "create", name, "--stage", "BUILD", "-q")).strip()
    ok(cli("stage", "start", run_id, "BUILD"))
    script, target = installed_cli
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cli.home),
        "PYTHONPATH": str(target),
        "STAGETRACK_URL": cli.base,
        "STAGETRACK_TOKEN": cli.admin,
    }
    watch = subprocess.Popen(
        [sys.executable, "-S", str(script), "runs", "watch", run_id, "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    guard = threading.Timer(60, watch.kill)  # a watch that never ends fails the test, not the suite
    guard.start()
    try:
        first = watch.stdout.readline()  # blocks until the first frame is printed
        assert first.startswith(f"run {run_id}  IN_PROGRESS"), first
        ok(cli("stage", "succeed", run_id, "BUILD"))
        rest = watch.stdout.read()  # (not communicate(): it would skip what readline buffered)
        err = watch.stderr.read()
        watch.wait()
    finally:
        guard.cancel()
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, err
    assert f"run {run_id}  SUCCESS" in rest
    assert [line.split()[:2] for line in (first + rest).splitlines() if line.startswith("BUILD ")] == [
        ["BUILD", "IN_PROGRESS"],
        ["BUILD", "SUCCESS"],
    ]


def test_approve_a_gate_and_cancel_and_retry_and_stop(cli):
    name = pipeline()
    run_id = ok(
        cli(
            "run", "create", name, "--stage", "BUILD", "--stage", "prod=DEPLOY_PROD", "--manual", "prod", "-q"
        )
    ).strip()
    ok(cli("stage", "start", run_id, "BUILD"))
    ok(cli("stage", "succeed", run_id, "BUILD"))
    waiting = json.loads(ok(cli("stage", "start", run_id, "prod", "-o", "json")))
    assert waiting["status"] == "WAITING_FOR_APPROVAL"
    approved = json.loads(ok(cli("approve", run_id, "--comment", "ship it", "-o", "json")))
    assert approved["status"] == "IN_PROGRESS"
    assert approved["approvalDecision"]["decision"] == "APPROVED"
    assert approved["approvalDecision"]["comment"] == "ship it"
    assert json.loads(ok(cli("approve", run_id, "prod", "-o", "json")))["status"] == "IN_PROGRESS"  # a no-op
    late = cli("reject", run_id, "prod", "--comment", "too late")
    assert late.returncode == 5 and "already_decided" in late.stderr and "stagetrack runs show" in late.stderr

    cancelled = json.loads(ok(cli("cancel", run_id, "--reason", "flaky", "-o", "json")))
    assert cancelled["status"] == "CANCELLED" and cancelled["cancellation"]["reason"] == "flaky"
    retried = json.loads(ok(cli("retry", run_id, "-o", "json")))
    assert [s["attempt"] for s in retried["stages"]] == [1, 2]

    other = ok(cli("run", "create", name, "-q")).strip()
    stopped = json.loads(ok(cli("stop", other, "--reason", "superseded", "-o", "json")))
    assert (stopped["id"], stopped["status"]) == (other, "CANCELLED")
    assert stopped["cancellation"]["reason"] == "superseded"


def test_cancel_force_skips_the_finally_stage(cli):
    import requests

    name = pipeline()
    created = requests.post(f"{cli.base}/api/runs", headers={"Authorization": f"Bearer {cli.admin}"},
                            json={"pipeline": name, "stages": ["BUILD", {"type": "OTHER", "name": "cleanup",
                                                                          "always": True}]}, timeout=30)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    ok(cli("stage", "start", run_id, "BUILD"))
    forced = json.loads(ok(cli("cancel", run_id, "--force", "--reason", "runner lost", "-o", "json")))
    assert forced["status"] == "CANCELLED"
    assert [s["status"] for s in forced["stages"]] == ["CANCELLED", "SKIPPED"]
    assert forced["cancellation"]["force"] is True and forced["cancellation"]["reason"] == "runner lost"
    assert "force-cancelled by bootstrap admin: runner lost" in ok(cli("runs", "show", run_id))
    refused = cli("cancel", run_id, "BUILD", "--force")
    assert refused.returncode == 2 and "--force cancels a whole run" in refused.stderr


def test_the_controls_concurrency_a_graceful_stop_and_schedules(cli):
    """Issue 15's controls from the command line on the real stack: a pipeline set QUEUED, a run
    waiting in line (its place shown), a stop with a grace period, and a schedule created,
    disabled, enabled, listed and deleted."""
    name = pipeline()
    first = ok(cli("run", "create", name, "--stage", "BUILD", "-q")).strip()
    shown = ok(cli("pipelines", "concurrency", name, "queued"))
    assert "concurrency QUEUED" in shown and "not locked" in shown
    holder = ok(cli("run", "create", name, "--stage", "BUILD", "-q")).strip()
    waiting = ok(cli("run", "create", name, "--stage", "BUILD", "-q")).strip()
    assert f"locked by {holder}" in ok(cli("pipelines", "concurrency", name))
    assert f"(waits: 1 of 1 in line, behind {holder})" in ok(cli("runs", "show", waiting))
    started = cli("stage", "start", waiting, "BUILD")
    assert started.returncode == 5 and "run_queued" in started.stderr and "promoted" in started.stderr

    ok(cli("stage", "start", holder, "BUILD"))
    stopping = json.loads(ok(cli("stop", holder, "--grace", "120", "--reason", "release", "-o", "json")))
    assert stopping["status"] == "CANCELLING" and stopping["stopping"]["graceSeconds"] == 120
    assert "running stages may finish until" in ok(cli("runs", "show", holder))
    ok(cli("cancel", holder))
    assert json.loads(ok(cli("runs", "show", waiting, "-o", "json")))["status"] == "IDLE"  # promoted
    assert first

    created = json.loads(ok(cli("schedules", "create", name, "0 0 29 2 *", "--time-zone", "Europe/Paris",
                                "--var", "ENV=prod", "--description", "leap day", "-o", "json")))
    assert created["enabled"] is True and created["description"] == "leap day"
    disabled = json.loads(ok(cli("schedules", "disable", name, created["id"], "-o", "json")))
    assert (disabled["enabled"], disabled["nextFireAt"]) == (False, None)
    assert json.loads(ok(cli("schedules", "enable", name, created["id"], "-o", "json")))["nextFireAt"]
    assert created["id"] in ok(cli("schedules", "list", name))
    ok(cli("schedules", "delete", name, created["id"]))
    assert json.loads(ok(cli("schedules", "list", name, "-o", "json")))["items"] == []


def test_errors_exit_with_their_code_and_say_what_to_do(cli):
    name = pipeline()
    run_id = ok(cli("run", "create", name, "--stage", "BUILD", "-q")).strip()

    bad = cli("runs", "show", run_id, token="st_not-a-token")
    assert bad.returncode == 3 and bad.stdout == ""
    assert "401" in bad.stderr and "stagetrack login" in bad.stderr

    reader = requests.post(
        f"{cli.base}/api/tokens",
        headers={"Authorization": f"Bearer {cli.admin}"},
        json={"name": "cli-reader", "scopes": ["read"]},
        timeout=10,
    ).json()["token"]
    ok(cli("runs", "show", run_id, token=reader))
    refused = cli("cancel", run_id, token=reader, env={})
    assert refused.returncode == 3 and "403" in refused.stderr and "scope" in refused.stderr
    assert json.loads(ok(cli("runs", "show", run_id, "-o", "json")))["status"] == "IDLE"  # nothing changed

    missing = cli("runs", "show", f"{name}:99", "-o", "json")
    assert missing.returncode == 4
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"
    no_stage = cli("stage", "start", run_id, "deploy")
    assert no_stage.returncode == 4 and "its stages: BUILD" in no_stage.stderr

    illegal = cli("stage", "succeed", run_id, "BUILD")  # IDLE -> SUCCESS is not a transition
    assert illegal.returncode == 5 and "illegal_transition" in illegal.stderr

    unset = cli("runs", "show", run_id, token=None, url=None)
    assert unset.returncode == 2 and "STAGETRACK_URL" in unset.stderr
    usage = cli("runs", "frobnicate")
    assert usage.returncode == 2


def test_login_saves_the_token_0600_and_later_commands_use_it(cli, tmp_path):
    name = pipeline()
    run_id = ok(cli("run", "create", name, "-q")).strip()
    config_home = tmp_path / "xdg"
    refused = cli(
        "login",
        "--url",
        cli.base,
        token=None,
        url=None,
        input="st_wrong\n",
        env={"XDG_CONFIG_HOME": str(config_home)},
    )
    assert refused.returncode == 3 and not (config_home / "stagetrack" / "config.json").exists()

    logged = cli(
        "login",
        "--url",
        cli.base,
        token=None,
        url=None,
        input=cli.admin + "\n",
        env={"XDG_CONFIG_HOME": str(config_home)},
    )
    assert logged.returncode == 0, logged.stderr
    assert cli.admin not in logged.stdout + logged.stderr
    path = config_home / "stagetrack" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    shown = cli(
        "runs", "show", run_id, "-o", "json", token=None, url=None, env={"XDG_CONFIG_HOME": str(config_home)}
    )
    assert json.loads(ok(shown))["id"] == run_id

    path.chmod(0o644)
    readable = cli("runs", "show", run_id, token=None, url=None, env={"XDG_CONFIG_HOME": str(config_home)})
    assert readable.returncode == 3 and "chmod 600" in readable.stderr


def test_finding_runs_across_pipelines_pipelines_and_the_approvals_inbox(cli):
    """The browsing endpoints of issue 13 (GET /api/runs without pipeline, GET /api/pipelines,
    GET /api/approvals) through the CLI."""
    branch = f"feature/{uuid.uuid4().hex[:8]}"
    first, second = pipeline(), pipeline()
    a = ok(cli("run", "create", first, "--stage", "BUILD", "--branch", branch, "-q")).strip()
    b = ok(
        cli(
            "run",
            "create",
            second,
            "--stage",
            "BUILD",
            "--stage",
            "prod=DEPLOY_PROD",
            "--manual",
            "prod",
            "--branch",
            branch,
            "-q",
        )
    ).strip()
    ok(cli("run", "create", second, "--stage", "BUILD", "--branch", "other", "-q"))

    found = json.loads(ok(cli("runs", "list", "--branch", branch, "--all", "-o", "json")))
    assert [r["id"] for r in found["items"]] == [b, a]  # newest first, across pipelines
    assert found["nextCursor"] is None
    table = ok(cli("runs", "list", "--branch", branch))
    assert [line.split()[:3] for line in table.splitlines()] == [
        ["RUN", "STATUS", "BRANCH"],
        [b, "IDLE", branch],
        [a, "IDLE", branch],
    ]

    pipelines = json.loads(ok(cli("pipelines", "list", "--all", "--runs", "1", "-o", "json")))["items"]
    mine = {p["name"]: p for p in pipelines if p["name"] in (first, second)}
    assert mine[second]["runCount"] == 2 and [r["counter"] for r in mine[second]["recentRuns"]] == [2]
    assert mine[first]["paused"] is False
    assert [p["name"] for p in pipelines].index(second) < [p["name"] for p in pipelines].index(first)
    rows = {line.split()[0]: line.split() for line in ok(cli("pipelines", "list", "--all")).splitlines()}
    assert rows[second][1:3] == ["-", "2"] and rows[second][-2:] == ["#2:IDLE", "#1:IDLE"]

    ok(cli("stage", "start", b, "BUILD"))
    ok(cli("stage", "succeed", b, "BUILD"))
    ok(cli("stage", "start", b, "prod"))
    inbox = json.loads(ok(cli("approvals", "--all", "-o", "json")))["items"]
    waiting = [i for i in inbox if i["run"]["id"] == b]
    assert [(i["stage"]["name"], i["stage"]["status"], i["run"]["branch"]) for i in waiting] == [
        ("prod", "WAITING_FOR_APPROVAL", branch)
    ]
    listed = cli("approvals", "--all")
    assert [b, "prod", branch] in [line.split()[:3] for line in ok(listed).splitlines()]
    assert "stagetrack approve RUN STAGE" in listed.stderr
    ok(cli("approve", b))
    inbox = json.loads(ok(cli("approvals", "--all", "-o", "json")))["items"]
    assert [i for i in inbox if i["run"]["id"] == b] == []


def test_insights_against_the_real_route(cli, start_chalice_local):
    """`stagetrack insights` over runs created here, against the real `GET /api/insights`, on a
    stack with the local ticker and outbox threads (the aggregates are fed from the change
    stream). Skips itself while the route answers 404 (it lands with issue 14's aggregates)."""
    import time

    probe = requests.get(f"{cli.base}/api/insights", headers={"Authorization": f"Bearer {cli.admin}"},
                         timeout=30)
    if probe.status_code == 404:
        pytest.skip("GET /api/insights answers 404: the route is not on this branch yet "
                    "(it lands with issue 14's aggregates; this test runs as soon as it does)")
    with start_chalice_local(STAGETRACK_ADMIN_TOKEN=cli.admin, STAGETRACK_LOCAL_TICKER="1",
                             STAGETRACK_TABLE=f"insights-{uuid.uuid4().hex[:12]}") as (base, _log):
        name = pipeline()
        for verb in ("succeed", "succeed", "fail"):
            run_id = ok(cli("run", "create", name, "--stage", "BUILD", "-q", url=base)).strip()
            ok(cli("stage", "start", run_id, "BUILD", url=base))
            ok(cli("stage", verb, run_id, "BUILD", url=base))
        deadline = time.monotonic() + 15
        while True:  # the stream consumer adds finished runs within seconds
            answer = json.loads(ok(cli("insights", "--pipeline", name, "-o", "json", url=base)))
            if answer["runs"]["total"] >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert (answer["runs"]["total"], answer["runs"]["success"], answer["runs"]["failure"]) == (3, 2, 1)
        table = ok(cli("insights", "--pipeline", name, url=base))
        assert table.startswith(f"insights of pipeline {name}, ")
        assert "runs          3 total: 2 success, 1 failure, 0 cancelled, 0 timed out" in table
        assert "success rate  66.7%" in table
        # `stagetrack insights rebuild --wait`: the server rebuilds in a thread (`make run`), the
        # CLI follows it to its end, and the rebuilt figures are the live ones
        rebuilt = json.loads(ok(cli("insights", "rebuild", "--wait", "--interval", "0.5", "--timeout", "60",
                                    "-o", "json", url=base)))
        assert (rebuilt["status"], rebuilt["runsRead"], rebuilt["failure"]) == ("succeeded", 3, None)
        assert json.loads(ok(cli("insights", "--pipeline", name, "-o", "json", url=base))) == answer
        status = ok(cli("insights", "rebuild", "--status", url=base))
        assert status.startswith(f"insights rebuild {rebuilt['id']}: succeeded\n")
