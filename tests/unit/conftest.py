"""The unit tier: the domain and everything that runs without AWS. No moto, no DynamoDB Local,
no network, no subprocess, so the tier runs anywhere in seconds (`make test-unit`).

The guard below keeps it that way: during every test in this folder, connecting a socket,
starting a process or creating a botocore/boto3 client raises ``UnitTierViolation``, and the
test fails even if the code under test swallowed that error. test_tier_guard.py also checks
statically that no module here imports moto, boto3, the AWS fixtures or subprocess. A test that
needs any of these belongs in tests/integration or tests/e2e.
"""
from __future__ import annotations

import socket
import subprocess

import botocore.session
import pytest


class UnitTierViolation(AssertionError):
    """A unit test reached for the network, a process or an AWS client."""


@pytest.fixture(autouse=True)
def _unit_tier_guard(monkeypatch):
    violations: list[str] = []

    def refuse(what):
        def refused(*args, **kwargs):
            violations.append(what)
            raise UnitTierViolation(f"unit tests must not {what}; move the test to tests/integration")
        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("connect a socket"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect a socket"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("resolve a host name"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("start a process"))
    monkeypatch.setattr(botocore.session.Session, "create_client", refuse("create an AWS client"))
    yield violations
    assert not violations, f"unit tier violated (the code under test hid the error): {violations}"
