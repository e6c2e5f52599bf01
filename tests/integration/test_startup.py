"""What happens when a fresh interpreter imports app.py (as a Lambda container or `chalice local`
does): what it loads, which settings stop it, and when it starts the local ticker."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_a_cold_start_does_not_build_what_it_may_never_use():
    """Vendor payload parsers (each integration's pydantic models) and the queue message models
    load on the first webhook, event or ingest message, not when a Lambda container imports
    app.py (bench/bench_import.py): the registry names its modules without importing them."""
    probe = ("import sys, app; from chalicelib import integrations; "
             "modules = ['chalicelib.events.messages', 'chalicelib.integrations.common'] "
             "+ [i._qualified for i in integrations.INTEGRATIONS if i.kind != 'outbound']; "
             "assert len(modules) == 6, modules; "
             "print(','.join(m for m in modules if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "STAGETRACK_LOCAL_TICKER": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_app_refuses_to_start_with_a_bad_setting_and_says_why():
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "STAGETRACK_LOCAL_TICKER": "maybe"}
    out = subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert (
        "STAGETRACK_LOCAL_TICKER must be true or false (also 1/0, yes/no, on/off), got 'maybe'" in out.stderr
    )


@pytest.mark.parametrize("flag, started", [("1", True), ("", False)])
def test_app_starts_the_ticker_only_when_asked(flag, started):
    code = ("import app; from chalicelib import ticker; "
            "print(ticker._ticker is not None and ticker._ticker.alive)")
    env = {"PATH": "/usr/bin:/bin", "STAGETRACK_LOCAL_TICKER": flag, "STAGETRACK_TICKER_SECONDS": "3600",
           "AWS_DEFAULT_REGION": "us-east-1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # the last line: a started local outbox may log first that the table is not reachable here
    assert out.stdout.strip().splitlines()[-1] == str(started)
