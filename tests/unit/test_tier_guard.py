"""The unit tier cannot silently rot: nothing here imports moto, boto3, the AWS-backed fixtures
or subprocess, and the runtime guard of conftest.py refuses sockets, processes and AWS clients."""
from __future__ import annotations

import ast
import socket
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest

from tests.unit.conftest import UnitTierViolation

HERE = Path(__file__).resolve().parent
FORBIDDEN = ("moto", "boto3", "subprocess", "tests.fixtures.backends", "tests.fixtures.ddb_local",
             "tests.integration", "tests.e2e")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path",
    sorted(p for p in HERE.glob("*.py") if p.name not in ("conftest.py", "test_tier_guard.py")),
    ids=lambda p: p.name,
)
def test_no_unit_module_imports_aws_or_processes(path):
    found = {name for name in imported_modules(path)
             if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)}
    assert not found, f"{path.name} imports {sorted(found)}: it belongs in tests/integration"


def test_the_forbidden_imports_are_found():
    sample = HERE / "conftest.py"
    assert "subprocess" in imported_modules(sample)  # the scanner sees plain imports


@pytest.mark.parametrize("reach", [
    lambda: socket.create_connection(("127.0.0.1", 9)),
    lambda: socket.socket().connect_ex(("127.0.0.1", 9)),
    lambda: socket.getaddrinfo("example.com", 443),
    lambda: subprocess.run([sys.executable, "-c", "pass"]),
    lambda: botocore.session.get_session().create_client("dynamodb", region_name="us-east-1"),
], ids=["connect", "connect_ex", "resolve", "process", "aws-client"])
def test_the_runtime_guard_refuses(reach, _unit_tier_guard):
    with pytest.raises(UnitTierViolation):
        reach()
    assert len(_unit_tier_guard) == 1  # recorded, so the test fails even if the error is swallowed
    _unit_tier_guard.clear()
