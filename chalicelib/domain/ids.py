"""Identifiers that carry their storage key, so every lookup is a strongly consistent read.

A run id is ``<pipeline>:<counter>`` and a stage id is ``<run id>:<position>``. Clients must
treat both as opaque strings; the format is ours to change. ':' cannot occur in a pipeline name,
so parsing is unambiguous. Malformed ids are simply unknown (404), never a 500.

Every check is a ``fullmatch``: with ``re.match``, ``$`` also matches before a final newline,
which made ``A:1:1\n`` an alias of ``A:1:1``. (pydantic's Rust engine reads ``$`` as the end
of the text, so the same patterns are safe in ``StringConstraints``.)
"""
from __future__ import annotations

import re

PIPELINE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$"
_PIPELINE = re.compile(PIPELINE_PATTERN)
_COUNTER = re.compile(r"^[1-9][0-9]{0,11}$")


def run_id(pipeline: str, counter: int) -> str:
    return f"{pipeline}:{counter}"


def stage_id(run: str, position: int) -> str:
    return f"{run}:{position}"


def parse_run_id(value: str) -> tuple[str, int] | None:
    pipeline, sep, counter = value.partition(":")
    if not sep or not _PIPELINE.fullmatch(pipeline) or not _COUNTER.fullmatch(counter):
        return None
    return pipeline, int(counter)


def parse_stage_id(value: str) -> tuple[str, int] | None:
    run, sep, position = value.rpartition(":")
    if not sep or parse_run_id(run) is None or not _COUNTER.fullmatch(position):
        return None
    return run, int(position)


def is_pipeline_name(value: str) -> bool:
    return bool(_PIPELINE.fullmatch(value))
