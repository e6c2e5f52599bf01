"""The ids the dialects address a pipeline by, shared by the layers that must agree on them.

A CodeArts build task's ``job_id`` is the MD5 of the pipeline's name (32 hex characters); a Buddy
pipeline's numeric ``pipeline_id`` is the first 52 bits of the SHA-256 of the name (a
JavaScript-safe integer). Both are functions of the name: they never change, anyone can compute
them (``printf %s web | md5sum``), and a token limited to some pipelines is checked against them
without reading anything.

Why here and not with the dialects' wire formats (api/codearts_wire.py, api/buddy_wire.py):
more than the web layer needs them. The pipeline item carries them as keys so each is found back
by one Query (store/pipelines.py, store/memory.py), the service looks pipelines up by them
(service/pipelines.py), and the native pipeline status shows them (domain/views.py). The store
and the service may not import api/, so the one definition sits here, in the domain, which all
of them may import. The rest of each dialect (status names, error bodies, request models,
answers) is its wire format and lives next to its routes.
"""
from __future__ import annotations

import hashlib

BUDDY_ID_BITS = 52
CODEARTS_KEY_PREFIX = "#codearts:"  # never a pipeline name: those cannot start with '#'
BUDDY_KEY_PREFIX = "#buddy:"


def codearts_job_id(pipeline: str) -> str:
    """The CodeArts build task id of a pipeline: MD5 of its name (an identifier, not a secret)."""
    return hashlib.md5(pipeline.encode("utf-8"), usedforsecurity=False).hexdigest()


def buddy_pipeline_id(pipeline: str) -> int:
    """The Buddy pipeline id of a pipeline: 52 bits of SHA-256 of its name, never 0."""
    value = int(hashlib.sha256(pipeline.encode("utf-8")).hexdigest()[: BUDDY_ID_BITS // 4], 16)
    return value or 1


def codearts_key(pipeline: str) -> str:
    """What the pipeline item is found by for a CodeArts job id (store/dialects.py)."""
    return CODEARTS_KEY_PREFIX + codearts_job_id(pipeline)


def buddy_key(pipeline: str) -> str:
    """What the pipeline item is found by for a Buddy pipeline id (store/dialects.py)."""
    return f"{BUDDY_KEY_PREFIX}{buddy_pipeline_id(pipeline)}"
