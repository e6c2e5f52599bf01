"""`make run`: DynamoDB Local + tables + `chalice local`, stopped together.

- DynamoDB Local on port $STAGETRACK_DDB_PORT (default 8001), data kept in
  .data/dynamodb (git-ignored), log in .data/dynamodb-local.log;
- the tables created with chalicelib.store.schema.ensure_tables;
- `chalice local --host 127.0.0.1 --port $PORT (default 8000)
  --no-autoreload`, with STAGETRACK_LOCAL_TICKER=1; its access log shows
  paths without query strings (tools/local_access_log.py).

Why --no-autoreload: chalice's reloader (without the optional watchdog
package) stats every file under the project directory once a second --
.venv, .local and .data included -- and restarts the server whenever any of
them changes. DynamoDB Local rewrites .data/dynamodb/*.db on every write, so
the API (and its ticker) would restart after each write. The reloader also
runs the server in a second process that does not stop when its parent gets
SIGTERM. Restart `make run` after changing code.

Ctrl-C, SIGTERM or SIGHUP stop chalice first, then DynamoDB Local. Both run
in their own sessions (so a terminal Ctrl-C reaches only us, and we stop
them in order) and, on Linux, are SIGTERMed by the kernel if this process
dies, even by SIGKILL: nothing is left running.

Note: `chalice local` (and chalice.test.Client) apply `environment_variables` from
.chalice/config.json over the process environment, so .chalice/config.json sets none:
every STAGETRACK_* setting comes from the environment (deployed: from the stack, which
sets STAGETRACK_TABLE per function).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

from tools import dynamodb_local

ROOT = dynamodb_local.REPO_ROOT


# `chalice` run by this same interpreter (chalice.cli has no __main__), its local gateway
# answering unknown paths with our gateway responses (tools/local_gateway.py) and its access log
# printing paths but no query strings (tools/local_access_log.py). Run from the repository root
# (cwd), so `tools` is importable. Tests start their servers with it too.
CHALICE_MAIN = (
    "import sys; from tools import local_access_log, local_gateway; local_access_log.install(); "
    "local_gateway.install(); "
    "from chalice.cli import main; sys.argv[0] = 'chalice'; sys.exit(main())"
)


class _Stop(Exception):
    pass


def _on_signal(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def _stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``proc`` (its own session), then
    SIGKILL it if it does not exit in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Whatever else is left in the group (children of chalice) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait()


def _wait_for_port(proc: subprocess.Popen, port: int, timeout: float) -> bool:
    """True once 127.0.0.1:port accepts connections; False if ``proc`` exits
    first or ``timeout`` passes (the main loop then reports what happened)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def main() -> int:
    ddb_port = int(os.environ.get("STAGETRACK_DDB_PORT", "8001"))
    api_port = int(os.environ.get("PORT", "8000"))
    endpoint = dynamodb_local.endpoint_url(ddb_port)

    os.environ["STAGETRACK_DYNAMODB_ENDPOINT"] = endpoint
    os.environ["AWS_DEFAULT_REGION"] = dynamodb_local.REGION
    os.environ.setdefault("AWS_ACCESS_KEY_ID", dynamodb_local.DUMMY_ACCESS_KEY_ID)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY",
                          dynamodb_local.DUMMY_SECRET_ACCESS_KEY)
    os.environ["STAGETRACK_LOCAL_TICKER"] = "1"

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    ddb = None
    api = None
    try:
        dynamodb_local.ensure_installed()
        print(f"starting DynamoDB Local on port {ddb_port} (the first start compiles its "
              f"loopback launcher) ...", flush=True)
        ddb = dynamodb_local.start(
            ddb_port, ROOT / ".data" / "dynamodb",
            log_path=ROOT / ".data" / "dynamodb-local.log",
        )
        print(f"DynamoDB Local at {endpoint} (data in .data/dynamodb, log in "
              f".data/dynamodb-local.log; started in "
              f"{ddb.startup_seconds:.1f}s)", flush=True)

        # Imported only now, with the environment set.
        from chalicelib.settings import Settings
        from chalicelib.store.schema import ensure_tables
        print("creating the tables if missing ...", flush=True)
        ensure_tables(Settings.from_env())
        print(f"starting chalice local on port {api_port} ...", flush=True)

        api = subprocess.Popen(
            [sys.executable, "-c", CHALICE_MAIN, "local",
             "--host", "127.0.0.1", "--port", str(api_port),
             "--no-autoreload"],
            cwd=str(ROOT), stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=dynamodb_local.die_with_parent(),
        )
        if _wait_for_port(api, api_port, timeout=60.0):
            print(f"stagetrack API: http://127.0.0.1:{api_port}/ "
                  f"(DynamoDB Local {endpoint}; Ctrl-C stops both)", flush=True)
        while True:
            if api.poll() is not None:
                print(f"chalice local exited with code {api.returncode}",
                      file=sys.stderr, flush=True)
                return api.returncode or 1
            if ddb.poll() is not None:
                print(f"DynamoDB Local exited with code {ddb.returncode}; "
                      f"see {ddb.log_path}", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.5)
    except (_Stop, KeyboardInterrupt) as e:
        print(f"\nstopping ({e or 'SIGINT'}) ...", file=sys.stderr, flush=True)
        return 0
    finally:
        # No more interruptions while cleaning up.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if api is not None:
            _stop_group(api)
        if ddb is not None:
            dynamodb_local.stop(ddb)


if __name__ == "__main__":
    sys.exit(main())
