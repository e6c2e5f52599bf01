"""Install, start and stop DynamoDB Local for local runs and tests.

DynamoDB Local comes from the npm package ``amplify-dynamodb-simulator``
(pinned below), which bundles ``DynamoDBLocal.jar`` and ``DynamoDBLocal_lib``
in its ``emulator/`` folder. Only that package's tarball is fetched, with
``npm pack`` (the ordinary npm client, from the npm registry), checked against
the pinned integrity hash, and unpacked under ``.local/``; its ~200 JavaScript
dependencies (about 280 MB), which only its Node wrapper uses, are not
installed. Java (17 is known to work) must be on PATH or under $JAVA_HOME.

Network exposure: DynamoDB Local (1.25.1) has no option to choose the
address it listens on (see ``java -jar DynamoDBLocal.jar -help``: only
-port, -inMemory, -dbPath, -sharedDb, -cors, -delayTransientStatuses,
-disableTelemetry, -optimizeDbBeforeStartup), and its own main listens on
every interface. So it is not started through its main: the small launcher
``tools/LoopbackDynamoDBLocal.java`` builds the same server from the same
arguments, binds its Jetty connector to 127.0.0.1, and starts it (compiled
once with javac into the install folder; Java's single-file source mode when
there is no javac). It is also started with ``-disableTelemetry`` so that it
makes no outbound calls.

CLI::

    python -m tools.dynamodb_local install
    python -m tools.dynamodb_local serve --port 8001 --db-path .data/dynamodb
    python -m tools.dynamodb_local serve --port 8001          # in memory
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NPM_PACKAGE = "amplify-dynamodb-simulator"
NPM_VERSION = "2.9.30"  # bundles DynamoDB Local 1.25.1
# From `npm view amplify-dynamodb-simulator@2.9.30 dist.integrity`.
NPM_INTEGRITY = (
    "sha512-xTeeRLvzEfqyd5lh3bH4c0kHvSHHmmhD5ZDsHFKAQ5g2Zl6JqlFdutaQhCLHzxEp6Ry1o7TB6niIoXuQAnSewQ=="
)

REGION = "us-east-1"
DUMMY_ACCESS_KEY_ID = "local"
DUMMY_SECRET_ACCESS_KEY = "local"
START_TIMEOUT = 60.0

REPO_ROOT = Path(__file__).resolve().parent.parent


def _log(msg: str) -> None:
    print(f"[dynamodb-local] {msg}", file=sys.stderr, flush=True)


def _install_dir(root: Path) -> Path:
    return root / f"{NPM_PACKAGE}-{NPM_VERSION}"


def _find_jar_dir(base: Path) -> Path | None:
    if not base.is_dir():
        return None
    for jar in sorted(base.rglob("DynamoDBLocal.jar")):
        if (jar.parent / "DynamoDBLocal_lib").is_dir():
            return jar.parent
    return None


def _check_integrity(tgz: Path) -> None:
    algo, _, expected = NPM_INTEGRITY.partition("-")
    h = hashlib.new(algo)
    with open(tgz, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    actual = base64.b64encode(h.digest()).decode()
    if actual != expected:
        raise RuntimeError(
            f"{tgz.name}: integrity mismatch (expected {NPM_INTEGRITY}, "
            f"got {algo}-{actual})"
        )


def ensure_installed(root: str | os.PathLike = ".local",
                     quiet: bool = False) -> Path:
    """Make sure DynamoDB Local is unpacked under ``root``; return the
    directory holding ``DynamoDBLocal.jar`` (and ``DynamoDBLocal_lib``).

    Idempotent and safe to call from several processes at once (pytest-xdist
    workers): a file lock serialises the install. A relative ``root`` is
    taken relative to the repository root, not the current directory.
    """
    root = Path(root)
    if not root.is_absolute():
        root = REPO_ROOT / root
    dest = _install_dir(root)
    found = _find_jar_dir(dest)
    if found is None:
        found = _install(root, dest)
    if not quiet:
        _log(f"DynamoDBLocal.jar is in {found}")
    return found


def _install(root: Path, dest: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    import fcntl  # POSIX only; imported here to keep module import cheap

    with open(root / ".dynamodb-local.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _find_jar_dir(dest)  # another process may have finished it
        if found is not None:
            return found
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                "npm is needed to fetch DynamoDB Local "
                f"({NPM_PACKAGE}@{NPM_VERSION}) but is not on PATH"
            )
        _log(f"fetching {NPM_PACKAGE}@{NPM_VERSION} with npm pack ...")
        with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-ddb-") as tmp:
            tmpdir = Path(tmp)
            proc = subprocess.run(
                [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}",
                 "--pack-destination", str(tmpdir), "--json",
                 "--no-fund", "--no-audit", "--loglevel=error"],
                cwd=tmpdir, stdin=subprocess.DEVNULL,
                capture_output=True, text=True,
            )
            tgzs = list(tmpdir.glob("*.tgz"))
            if proc.returncode != 0 or len(tgzs) != 1:
                raise RuntimeError(
                    f"npm pack {NPM_PACKAGE}@{NPM_VERSION} failed "
                    f"(exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
                )
            _log(f"checking its integrity and unpacking it into {dest} ...")
            _check_integrity(tgzs[0])
            unpacked = tmpdir / "unpacked"
            with tarfile.open(tgzs[0]) as tf:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                    tf.extractall(unpacked, filter="data")
                else:
                    tf.extractall(unpacked)
            # npm tarballs hold everything under "package/".
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(unpacked / "package", dest)
        found = _find_jar_dir(dest)
        if found is None:
            raise RuntimeError(f"DynamoDBLocal.jar not found in {dest}")
        return found


def free_port() -> int:
    """A TCP port that is free right now on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    # Binding the wildcard address fails if anything holds the port on any
    # address (DynamoDB Local holds 127.0.0.1 only); also try
    # connecting on loopback in case something holds 127.0.0.1 only.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: connections in TIME_WAIT (from a previous instance)
        # do not stop Java from binding, and must not stop us either.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "Java is needed to run DynamoDB Local but `java` is not on PATH "
            "(and $JAVA_HOME is unset); install e.g. Debian's "
            "openjdk-17-jre-headless"
        )
    return java


LAUNCHER_SOURCE = Path(__file__).with_name("LoopbackDynamoDBLocal.java")
LAUNCHER_CLASS = "LoopbackDynamoDBLocal"


def _launcher(java: str, jar_dir: Path) -> list[str]:
    """The java arguments that start DynamoDB Local bound to 127.0.0.1 (see the module doc).

    The launcher is compiled once per source version into the install folder (a new folder is
    renamed into place, so concurrent starts never see half a class); without javac it runs in
    single-file source mode, which compiles it in memory at every start."""
    jar = str(jar_dir / "DynamoDBLocal.jar")
    source = LAUNCHER_SOURCE.read_bytes()
    classes = jar_dir.parent / f"stagetrack-launcher-{hashlib.sha256(source).hexdigest()[:12]}"
    javac = Path(java).with_name("javac")
    javac_path = str(javac) if javac.is_file() else shutil.which("javac")
    if not (classes / f"{LAUNCHER_CLASS}.class").is_file() and javac_path:
        _log(f"compiling {LAUNCHER_SOURCE.name} with javac (once) ...")
        staging = Path(tempfile.mkdtemp(prefix="launcher-", dir=jar_dir.parent))
        try:
            subprocess.run([javac_path, "-nowarn", "-cp", jar, "-d", str(staging), str(LAUNCHER_SOURCE)],
                           check=True, capture_output=True, timeout=120)
            try:
                staging.rename(classes)
            except OSError:  # another process put the same classes there first
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if (classes / f"{LAUNCHER_CLASS}.class").is_file():
        return ["-cp", f"{jar}{os.pathsep}{classes}", LAUNCHER_CLASS]
    return ["-cp", jar, str(LAUNCHER_SOURCE)]


def endpoint_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _client(endpoint: str):
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    return session.create_client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=DUMMY_ACCESS_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
        config=Config(
            connect_timeout=1,
            read_timeout=5,
            retries={"total_max_attempts": 1},
        ),
    )


def _tail(path: str | None, n: int = 40) -> str:
    if not path:
        return "(no log file)"
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]) or "(log is empty)"
    except OSError as e:
        return f"(cannot read log {path}: {e})"


def die_with_parent():
    """A ``preexec_fn`` for Popen that, on Linux, has the child SIGTERMed when
    the process that started it dies (even by SIGKILL), so that no child
    outlives us. Returns None where prctl is not available, and when called
    from a thread other than the main one.

    The libc lookup happens here, in the parent; the child only makes the
    system call (nothing that could take a lock after fork).
    """
    if not sys.platform.startswith("linux"):
        return None
    # Linux sends the signal when the *thread* that forked exits, not the
    # process: from any thread but the main one, that could come too soon.
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    PR_SET_PDEATHSIG = 1
    sig = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


@dataclass
class LocalProcess:
    """A running DynamoDB Local (what ``start`` returns): the process and
    what its owner needs to know about it."""

    popen: subprocess.Popen[bytes]
    endpoint_url: str
    log_path: str
    log_is_temp: bool  # ``stop`` removes the log (``start`` made a temporary one)
    startup_seconds: float = 0.0  # how long it took to answer (set by ``start``)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()


def start(port: int, db_path: str | os.PathLike | None,
          log_path: str | os.PathLike | None = None,
          root: str | os.PathLike = ".local",
          timeout: float = START_TIMEOUT) -> LocalProcess:
    """Start DynamoDB Local on ``port`` and wait until it answers ListTables.

    ``db_path``: directory for the persistent database (created if missing),
    or None for ``-inMemory``. ``-sharedDb`` is always passed, so every
    credential/region sees the same tables. Output goes to ``log_path`` (a
    temporary file when None; see ``proc.log_path``). The process gets its
    own session (so a terminal Ctrl-C reaches only its owner, which stops it
    in order) and, on Linux, is SIGTERMed if the starting process dies.

    It listens on 127.0.0.1 only (``_launcher``); clients use ``endpoint_url(port)``.
    """
    java = _java()
    jar_dir = ensure_installed(root, quiet=True)
    if _port_in_use(port):
        raise RuntimeError(f"port {port} is already in use; "
                           "is another DynamoDB Local running?")
    cmd = [
        java,
        f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
        *_launcher(java, jar_dir),
        "-port", str(port),
        "-sharedDb",
        "-disableTelemetry",
    ]
    if db_path is None:
        cmd.append("-inMemory")
    else:
        db_dir = Path(db_path).resolve()
        db_dir.mkdir(parents=True, exist_ok=True)
        cmd += ["-dbPath", str(db_dir)]

    if log_path is None:
        fd, log_file = tempfile.mkstemp(prefix=f"dynamodb-local-{port}-",
                                        suffix=".log")
        os.close(fd)
    else:
        log_file = str(Path(log_path).resolve())
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)

    with open(log_file, "ab") as log:
        popen = subprocess.Popen(
            cmd, cwd=str(jar_dir), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent(),
        )
    proc = LocalProcess(popen, endpoint_url(port), log_file, log_is_temp=log_path is None)

    try:
        _wait_ready(proc, port, timeout)
    except BaseException:
        proc.log_is_temp = False  # keep the log the error message points at
        stop(proc)
        raise
    return proc


def _wait_ready(proc: LocalProcess, port: int, timeout: float) -> None:
    endpoint = endpoint_url(port)
    client = _client(endpoint)
    t0 = time.monotonic()
    deadline = t0 + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"DynamoDB Local exited with code {proc.returncode} before "
                f"answering; log {proc.log_path} ends with:\n"
                f"{_tail(proc.log_path)}"
            )
        try:
            client.list_tables(Limit=1)
        except Exception as e:  # connection refused, 5xx while booting ...
            last_err = e
            time.sleep(0.1)
            continue
        proc.startup_seconds = time.monotonic() - t0
        return
    raise RuntimeError(
        f"DynamoDB Local did not answer ListTables on {endpoint} within "
        f"{timeout:.0f}s (last error: {last_err!r}); log {proc.log_path} "
        f"ends with:\n{_tail(proc.log_path)}"
    )


def stop(proc: LocalProcess, timeout: float = 10.0) -> None:
    """Terminate DynamoDB Local (SIGTERM, then SIGKILL after ``timeout``);
    remove its log if ``start`` made a temporary one."""
    popen = proc.popen
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.terminate()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            popen.wait()
    if proc.log_is_temp:
        with contextlib.suppress(OSError):
            os.unlink(proc.log_path)


def _serve(args: argparse.Namespace) -> int:
    def on_signal(signum, frame):
        raise KeyboardInterrupt

    # SIGINT too: a shell may start us with SIGINT ignored (background job).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    proc = start(args.port, args.db_path, log_path=args.log)
    where = args.db_path and f"data in {Path(args.db_path).resolve()}" or "in memory"
    print(f"DynamoDB Local ready at {proc.endpoint_url} ({where}; "
          f"started in {proc.startup_seconds:.1f}s; log {proc.log_path}); "
          "Ctrl-C to stop", flush=True)
    try:
        while proc.poll() is None:
            time.sleep(0.5)
        print(f"DynamoDB Local exited with code {proc.returncode}; log ends "
              f"with:\n{_tail(proc.log_path)}", file=sys.stderr)
        return proc.returncode or 1
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.dynamodb_local")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="fetch DynamoDB Local into .local/")
    s = sub.add_parser("serve", help="run DynamoDB Local in the foreground")
    s.add_argument("--port", type=int, default=8001)
    s.add_argument("--db-path", default=None,
                   help="persist data in this directory (default: in memory)")
    s.add_argument("--log", default=None, help="log file (default: temp file)")
    args = p.parse_args(argv)
    if args.cmd == "install":
        ensure_installed()
        return 0
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
