"""Cold import time of app.py as a ratio to `import boto3` alone (fresh interpreter each time).

Run: .venv/bin/python bench/bench_import.py [repeats]
"""
from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 15
PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def cold_import_seconds(module: str) -> float:
    samples = []
    for _ in range(REPEATS):
        out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        samples.append(float(out.stdout.strip()))
    return statistics.median(samples)


def main() -> None:
    boto3_s = cold_import_seconds("boto3")
    app_s = cold_import_seconds("app")
    print(f"import boto3 : {boto3_s * 1000:7.1f} ms (median of {REPEATS})")
    print(f"import app   : {app_s * 1000:7.1f} ms (median of {REPEATS})")
    print(f"ratio app/boto3: {app_s / boto3_s:.2f}")


if __name__ == "__main__":
    main()
