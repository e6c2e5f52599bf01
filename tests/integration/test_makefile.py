"""The Makefile's entry points: `make` alone prints help (it never starts the suite), every
target says what it does, `make test` runs the three tiers, and the unit tier needs neither
DynamoDB Local nor Java."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def make(*args: str) -> subprocess.CompletedProcess:
    # -o marks the virtualenv stamp as up to date, so no target here installs anything
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.requirements.stamp", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def phony_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    return re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split()


def test_make_without_a_target_prints_help_and_runs_nothing():
    planned = make("-n")  # a dry run first: a regression must not start the suite from here
    assert planned.returncode == 0 and "pytest" not in planned.stdout, planned.stdout
    done = make()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stagetrack -- make <target>:")
    listed = re.findall(r"^  ([a-z0-9-]+) +\S", done.stdout, re.M)
    assert {"help", "run", "test", "test-unit", "test-integration", "test-e2e"} <= set(listed)
    assert "pytest" not in done.stdout + done.stderr


def test_every_target_but_internal_ones_is_described_in_the_help():
    listed = set(re.findall(r"^  ([a-z0-9-]+) +\S", make("help").stdout, re.M))
    assert set(phony_targets()) - listed == {"ddb-local"}


def test_make_test_runs_every_tier_and_only_the_unit_tier_goes_without_dynamodb_local():
    steps = make("-n", "test").stdout
    tiers = re.findall(r"-m pytest .*?(tests/\w+)$", steps, re.M)
    assert tiers == ["tests/unit", "tests/integration", "tests/e2e"]
    unit = make("-n", "test-unit").stdout
    assert "dynamodb_local" not in unit and "ensure_installed" not in unit
    for tier in ("test-integration", "test-e2e"):
        assert "ensure_installed" in make("-n", tier).stdout


def test_make_lint_checks_the_tests_too():
    assert re.search(r"-m ruff check \.$", make("-n", "lint").stdout, re.M)
    shown = subprocess.run([sys.executable, "-m", "ruff", "check", "--show-files", "."],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    checked = {(ROOT / line).resolve() for line in shown.stdout.splitlines()}
    tests = set((ROOT / "tests").rglob("*.py"))
    assert tests and not tests - checked, sorted(str(p.relative_to(ROOT)) for p in tests - checked)


def test_make_mutate_runs_mutmut_from_scratch_then_the_per_module_verdict_and_is_not_in_make_test():
    steps = make("-n", "mutate").stdout.splitlines()
    commands = [s for s in steps if "mutmut run" in s or "mutation_report" in s or s.startswith("rm -rf")]
    assert [c.split(" -m ")[-1] if " -m " in c else c for c in commands] == [
        "rm -rf mutants", "mutmut run --max-children 2", "tools.mutation_report"]
    assert "mutmut" not in make("-n", "test").stdout
    assert "mutants/" in (ROOT / ".gitignore").read_text().splitlines()
