"""`make mutate`'s verdict: the mutation score of each mutated module, and a non-zero exit when
any is below its floor.

mutmut (configured under ``[tool.mutmut]`` in pyproject.toml, whose ``only_mutate`` is the one
list of mutated modules) writes one ``mutants/<path>.meta`` per module with the exit code of the
test run against each of its mutants. This reads them back:

    score = killed / (mutants - skipped)

where killed counts the mutants a test failed on (or that timed out: a mutant that makes the
code loop forever is caught). A mutant no unit test reaches ("no tests") counts as surviving:
nothing pins that code. Mutants excluded with ``# pragma: no mutate`` are not generated at all.

Run from the repository root after ``mutmut run``: ``python -m tools.mutation_report``.
"""
from __future__ import annotations

import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

FLOOR = 90.0  # percent, for every module in only_mutate
WORK_DIR = Path("mutants")  # mutmut's; in .gitignore

# mutmut's exit codes (mutmut/stats.py): which count as caught, which as not tested at all.
_KILLED = {1, 3, 24, -24, 36, 37, 152, 255}
_SKIPPED = {34}
_NO_TESTS = {5, 33}


@dataclass(frozen=True)
class Score:
    module: str
    total: int
    killed: int
    survived: int
    no_tests: int
    not_checked: int
    missing: bool = False  # the module is not there (moved?): update only_mutate

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0


def mutated_modules(pyproject: Path = Path("pyproject.toml")) -> list[str]:
    config = tomllib.loads(pyproject.read_text("utf-8"))["tool"]["mutmut"]
    return list(config["only_mutate"])


def score_of(module: str, exit_codes: dict[str, int | None]) -> Score:
    codes = [code for code in exit_codes.values() if code not in _SKIPPED]
    killed = sum(code in _KILLED for code in codes)
    no_tests = sum(code in _NO_TESTS for code in codes)
    not_checked = sum(code is None for code in codes)
    return Score(module, len(codes), killed, len(codes) - killed - no_tests - not_checked, no_tests,
                 not_checked)


def read_scores(modules: list[str], work_dir: Path = WORK_DIR) -> list[Score]:
    scores = []
    for module in modules:
        if not Path(module).is_file():
            scores.append(Score(module, 0, 0, 0, 0, 0, missing=True))
            continue
        meta = work_dir / (module + ".meta")
        exit_codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"] if meta.exists() else {}
        scores.append(score_of(module, exit_codes))
    return scores


def report(scores: list[Score], floor: float = FLOOR) -> tuple[str, bool]:
    """The table, and whether every module reached the floor (a module without mutants passes)."""
    lines = [f"{'module':<36} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'not run':>7} "
             f"{'score':>7}"]
    ok = True
    for s in scores:
        if s.missing:
            ok = False
            lines.append(f"{s.module:<36} no such file: update only_mutate in pyproject.toml")
            continue
        below = s.percent < floor or s.not_checked > 0
        ok = ok and not below
        lines.append(f"{s.module:<36} {s.total:>7} {s.killed:>6} {s.survived:>8} {s.no_tests:>8} "
                     f"{s.not_checked:>7} {s.percent:>6.1f}%" + ("  BELOW FLOOR" if below else ""))
    total = sum(s.total for s in scores)
    killed = sum(s.killed for s in scores)
    lines.append(f"{'all':<36} {total:>7} {killed:>6} {'':>8} {'':>8} {'':>7} "
                 f"{(100.0 * killed / total if total else 100.0):>6.1f}%")
    lines.append(f"floor {floor:.0f}% per module: " + ("met" if ok else "NOT met") +
                 " (`.venv/bin/python -m mutmut results` lists the survivors, `mutmut show NAME` one)")
    return "\n".join(lines), ok


def main() -> int:
    text, ok = report(read_scores(mutated_modules()))
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
