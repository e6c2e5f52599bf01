"""Counts as CloudWatch embedded metric format (EMF): one JSON line on stdout per count.

Lambda sends stdout to the function's log group, and CloudWatch Logs turns every line that
carries an ``_aws`` member into metric data: no client, no API call, no permission beyond
writing logs, nothing on the request's path. Standard library only (no new dependency in the
Lambda package). The line, for ``count("RunsFinished", dimensions={"Status": "SUCCESS"})``::

    {"_aws":{"Timestamp":1700000000000,"CloudWatchMetrics":[{"Namespace":"Stagetrack/prod",
     "Dimensions":[["Status"]],"Metrics":[{"Name":"RunsFinished","Unit":"Count"}]}]},
     "Status":"SUCCESS","RunsFinished":1}

The namespace is ``STAGETRACK_METRICS_NAMESPACE`` (the template sets ``Stagetrack/<stack>``);
without it nothing is written (``NoMetrics``). The clock is the service's, so tests see exact
timestamps. The names and dimensions the service counts are listed in docs/runbook.md.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import TextIO

from ..domain.clock import Clock

# EMF: metric and dimension names are 1-255 characters; dimension values 1-1024; at most 30
# dimensions. Ours are fixed in code, so anything else is a programming error, raised at once.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,254}")
_RESERVED = {"_aws"}
MAX_DIMENSIONS = 30


class EmfMetrics:
    def __init__(self, namespace: str, clock: Clock, out: Callable[[], TextIO] = lambda: sys.stdout) -> None:
        self.namespace = namespace
        self.clock = clock
        self._out = out  # read at each write: Lambda and the tests may swap sys.stdout

    def line(self, name: str, value: int = 1, dimensions: dict[str, str] | None = None) -> str:
        dimensions = dict(dimensions or {})
        if not _NAME.fullmatch(name) or name in dimensions:
            raise ValueError(f"bad metric name {name!r}")
        if len(dimensions) > MAX_DIMENSIONS:
            raise ValueError(f"{len(dimensions)} dimensions; EMF takes at most {MAX_DIMENSIONS}")
        for key, text in dimensions.items():
            if not _NAME.fullmatch(key) or key in _RESERVED or not isinstance(text, str) \
                    or not 1 <= len(text) <= 1024:
                raise ValueError(f"bad dimension {key!r}={text!r}")
        if type(value) is not int or value < 0:
            raise ValueError(f"a count is a whole number >= 0, got {value!r}")
        timestamp = int(self.clock.now().timestamp() * 1000)
        document = {
            "_aws": {"Timestamp": timestamp, "CloudWatchMetrics": [{
                "Namespace": self.namespace,
                "Dimensions": [sorted(dimensions)],
                "Metrics": [{"Name": name, "Unit": "Count"}],
            }]},
            **dimensions,
            name: value,
        }
        return json.dumps(document, separators=(",", ":"))

    def count(self, name: str, value: int = 1, dimensions: dict[str, str] | None = None) -> None:
        out = self._out()
        out.write(self.line(name, value, dimensions) + "\n")
        out.flush()
