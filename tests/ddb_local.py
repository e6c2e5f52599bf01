"""Helper for a pytest fixture that runs a real DynamoDB Local (not a conftest).

Importing this module has no side effects: nothing is installed or started
until ``DynamoDBLocal`` is entered. Typical use in a conftest::

    from tests.ddb_local import DynamoDBLocal

    @pytest.fixture(scope="session")
    def ddb_local_endpoint():
        with DynamoDBLocal() as endpoint:   # "http://127.0.0.1:<port>"
            yield endpoint

Each entry starts a fresh in-memory instance (``-inMemory -sharedDb``) on a
free port; with pytest-xdist every worker gets its own. Clients must use
region ``REGION`` and any credentials (``DUMMY_CREDENTIALS`` / ``aws_env``).

If Java (or npm, for the first install) is missing this raises: it never
skips, so CI cannot pass by silently not running the DynamoDB Local tier.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def _tools_module() -> ModuleType:
    try:
        from tools import dynamodb_local
        return dynamodb_local
    except ImportError:
        # Repository root not on sys.path: load the module by file path
        # (it imports nothing from the project).
        path = Path(__file__).resolve().parent.parent / "tools" / "dynamodb_local.py"
        spec = importlib.util.spec_from_file_location("_stagetrack_dynamodb_local", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


REGION = "us-east-1"
DUMMY_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


class DynamoDBLocal:
    """Context manager: a fresh in-memory DynamoDB Local on 127.0.0.1.

    ``__enter__`` returns the endpoint URL; ``__exit__`` stops the process.
    Attributes once entered: ``endpoint``, ``port``, ``proc``,
    ``startup_seconds``, ``log_path``.
    """

    def __init__(self, port: int | None = None, timeout: float = 60.0) -> None:
        self._requested_port = port
        self._timeout = timeout
        self.port: int | None = None
        self.endpoint: str | None = None
        self.proc = None
        self.startup_seconds: float | None = None
        self.log_path: str | None = None

    def start(self) -> str:
        ddb = _tools_module()
        ddb.ensure_installed(quiet=True)
        self.port = self._requested_port or ddb.free_port()
        self.proc = ddb.start(self.port, None, timeout=self._timeout)
        self.endpoint = ddb.endpoint_url(self.port)
        self.startup_seconds = self.proc.startup_seconds
        self.log_path = self.proc.log_path
        return self.endpoint

    def stop(self) -> None:
        if self.proc is not None:
            _tools_module().stop(self.proc)
            self.proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def aws_env(self) -> dict[str, str]:
        """Environment variables pointing AWS SDKs/settings at this instance."""
        return {
            "STAGETRACK_DYNAMODB_ENDPOINT": self.endpoint or "",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
        }
