"""Cold import time of app.py as a ratio to `import boto3` alone (fresh interpreter each time).

app.py is imported from a clean copy of the project (tools.package.stage_project), once with
bytecode compiled as `make package` ships it and once from sources only (what every Lambda cold
start would pay without it: /var/task is read-only, so nothing is cached between them). The
probes are interleaved, so a busy moment on the machine hits all three alike.
Run: .venv/bin/python bench/bench_import.py [repeats]
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 21
# CPU time of the import (time.process_time): unlike wall time it does not count the moments the
# process waits for a core, so the figure holds on a busy 2-core machine.
PROBE = "import time; t = time.process_time(); import {module}; print(time.process_time() - t)"


def import_seconds(module: str, cwd: Path) -> float:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "STAGETRACK_LOCAL_TICKER": ""}
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=cwd, env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    from tools.package import compile_tree, stage_project

    with tempfile.TemporaryDirectory() as scratch:
        sources = stage_project(Path(scratch) / "sources", requirements="")
        compiled = stage_project(Path(scratch) / "compiled", requirements="")
        compile_tree(compiled)  # as `make package` compiles deployment.zip
        samples: dict[str, list[float]] = {"boto3": [], "compiled": [], "sources": []}
        for _ in range(REPEATS):
            samples["boto3"].append(import_seconds("boto3", ROOT))
            samples["compiled"].append(import_seconds("app", compiled))
            samples["sources"].append(import_seconds("app", sources))
    print(f"{'cold import (CPU ms)':28} {'median':>8} {'min':>8} {'ratio (median)':>15} {'ratio (min)':>12}")
    boto3_med, boto3_min = statistics.median(samples["boto3"]), min(samples["boto3"])
    for key, label in (("boto3", "import boto3"), ("compiled", "import app (bytecode shipped)"),
                       ("sources", "import app (sources only)")):
        med, low = statistics.median(samples[key]), min(samples[key])
        print(
            f"{label:28} {med * 1000:8.1f} {low * 1000:8.1f} {med / boto3_med:15.2f} {low / boto3_min:12.2f}"
        )
    print(f"({REPEATS} interleaved runs each; dependencies come from the virtualenv, compiled by pip)")

if __name__ == "__main__":
    main()
