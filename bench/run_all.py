"""Runs every bench/bench_*.py in turn and prints their figures."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    failed = 0
    # the import timing first, while no DynamoDB Local (a JVM) is starting or stopping
    scripts = sorted(HERE.glob("bench_*.py"), key=lambda path: (path.name != "bench_import.py", path.name))
    for script in scripts:
        print(f"\n== {script.name}", flush=True)
        failed |= subprocess.run([sys.executable, str(script)], cwd=HERE).returncode
    sys.exit(failed)
