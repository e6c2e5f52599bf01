"""`make mutate`'s verdict (tools/mutation_report.py): the score per module from mutmut's exit
codes, and failure below the floor, on a mutant not run, or on a listed module that moved."""
from __future__ import annotations

import json
from pathlib import Path

from tools import mutation_report
from tools.mutation_report import Score, report, score_of

ROOT = Path(__file__).resolve().parents[2]


def test_the_score_counts_killed_and_timed_out_mutants_and_not_untested_ones():
    score = score_of("m.py", {"a": 1, "b": 36, "c": 0, "d": 33, "e": 34, "f": 3, "g": 5})
    assert (score.total, score.killed, score.survived, score.no_tests, score.not_checked) == (6, 3, 1, 2, 0)
    assert score.percent == 50.0
    assert Score("m.py", 0, 0, 0, 0, 0).percent == 100.0


def test_the_report_fails_below_the_floor_and_passes_at_it():
    at_floor = score_of("a.py", {str(i): (1 if i < 9 else 0) for i in range(10)})
    text, ok = report([at_floor], floor=90.0)
    assert ok and "90.0%" in text and "BELOW FLOOR" not in text
    below = score_of("b.py", {str(i): (1 if i < 8 else 0) for i in range(10)})
    text, ok = report([at_floor, below], floor=90.0)
    assert not ok and "b.py" in text and text.count("BELOW FLOOR") == 1


def test_a_mutant_not_run_fails_the_report():
    _, ok = report([score_of("a.py", {"x": 1, "y": None})], floor=0.0)
    assert not ok


def test_scores_are_read_from_mutmuts_meta_files_and_a_moved_module_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "rules.py").write_text("")
    (tmp_path / "mutants" / "pkg").mkdir(parents=True)
    (tmp_path / "mutants" / "pkg" / "rules.py.meta").write_text(json.dumps({"exit_code_by_key": {"m1": 1}}))
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nonly_mutate = ["pkg/rules.py", "pkg/gone.py"]\n')
    modules = mutation_report.mutated_modules()
    assert modules == ["pkg/rules.py", "pkg/gone.py"]
    rules, gone = mutation_report.read_scores(modules)
    assert (rules.killed, rules.total, gone.missing) == (1, 1, True)
    text, ok = report([rules, gone])
    assert not ok and "pkg/gone.py" in text and "update only_mutate" in text


AUTH_CODE = {"chalicelib/api/credentials.py", "chalicelib/api/aksk.py"}  # left domain/auth.py in issue 11


def test_the_listed_modules_are_every_domain_module_and_the_auth_code():
    """A module added to domain/ is a rule module: it is mutated too, or this fails."""
    domain = {f"chalicelib/domain/{p.name}" for p in (ROOT / "chalicelib" / "domain").glob("*.py")
              if p.name != "__init__.py"}
    assert set(mutation_report.mutated_modules()) == domain | AUTH_CODE
