"""The ids the CodeArts and Buddy dialects address a pipeline by (domain/dialect_ids.py).

Clients store these ids (a CodeArts job id in a build script, a Buddy pipeline id in a webhook):
they must stay exactly as documented, whatever the release, and differ between pipelines."""
from __future__ import annotations

import hashlib

import pytest

from chalicelib.domain import dialect_ids

# What anyone computes from the name alone: `printf %s web | md5sum`, `printf %s web | sha256sum`.
WEB_JOB_ID = "2567a5ec9705eb7ac2c984033e06189d"
WEB_BUDDY_ID = 0x4B5E57F6EB2F4  # the first 13 hex digits (52 bits) of sha256("web")


def test_the_codearts_job_id_is_the_md5_of_the_pipeline_name():
    assert dialect_ids.codearts_job_id("web") == WEB_JOB_ID
    name = "déploiement-✓"  # non-ASCII names hash as UTF-8
    assert dialect_ids.codearts_job_id(name) == hashlib.md5(name.encode("utf-8")).hexdigest()


def test_the_buddy_pipeline_id_is_52_bits_of_the_sha256_of_the_name():
    assert WEB_BUDDY_ID == 1325897196942068
    assert dialect_ids.buddy_pipeline_id("web") == WEB_BUDDY_ID
    name = "déploiement-✓"
    expected = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:13], 16)
    assert dialect_ids.buddy_pipeline_id(name) == expected


@pytest.mark.parametrize("name", ["web", "api", "a", "web-2", "x" * 100, "déploiement-✓"])
def test_buddy_pipeline_ids_are_positive_javascript_safe_integers(name):
    value = dialect_ids.buddy_pipeline_id(name)
    assert isinstance(value, int) and 0 < value < 2**52 <= 2**53 - 1


def test_a_buddy_pipeline_id_is_never_zero(monkeypatch):
    """A name whose hash starts with 52 zero bits still gets an id a client can send (1)."""

    class ZeroHash:
        def hexdigest(self):
            return "0" * 64

    monkeypatch.setattr(dialect_ids.hashlib, "sha256", lambda data: ZeroHash())
    assert dialect_ids.buddy_pipeline_id("web") == 1


def test_ids_are_distinct_per_pipeline_and_stable():
    names = ["web", "api", "worker", "web2", "Web"]
    assert len({dialect_ids.codearts_job_id(n) for n in names}) == len(names)
    assert len({dialect_ids.buddy_pipeline_id(n) for n in names}) == len(names)
    assert dialect_ids.codearts_job_id("web") == dialect_ids.codearts_job_id("web")


def test_the_lookup_keys_are_prefixed_so_they_never_collide_with_a_pipeline_name():
    assert dialect_ids.codearts_key("web") == "#codearts:" + WEB_JOB_ID
    assert dialect_ids.buddy_key("web") == f"#buddy:{WEB_BUDDY_ID}"
    assert dialect_ids.codearts_key("web") != dialect_ids.buddy_key("web")


def test_the_codearts_job_id_is_computed_on_a_fips_build(monkeypatch):
    """MD5 names a job here, it protects nothing: the call says so, which a FIPS-mode Python
    (where MD5 for security raises) requires. Simulated: an md5 that refuses any other use."""
    real_md5 = hashlib.md5

    def fips_md5(data, **kwargs):
        if kwargs.get("usedforsecurity") is not False:
            raise ValueError("[digital envelope routines] unsupported (FIPS mode)")
        return real_md5(data, **kwargs)

    monkeypatch.setattr(dialect_ids.hashlib, "md5", fips_md5)
    assert dialect_ids.codearts_job_id("web") == WEB_JOB_ID
