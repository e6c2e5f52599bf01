"""Rebuild the insights aggregates from the stored runs (service/insights.py ``rebuild``), on
the table the environment names (STAGETRACK_TABLE, STAGETRACK_DYNAMODB_ENDPOINT, ...):

    python -m tools.rebuild_insights        (or: make insights-rebuild)

For an upgrade (runs stored before the consumer existed) or after a bug in it. It reads every
stored run, so it is an operator's command, never a request's work.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rebuild_insights",
                                     description="Rebuild the insights aggregates from the stored runs.")
    parser.parse_args(argv)
    from chalicelib import wiring
    from chalicelib.service.insights import rebuild

    report = rebuild(wiring.context())
    print(f"rebuilt {report.pipelines} pipeline(s) from {report.runs} run(s): {report.items} item(s) written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
