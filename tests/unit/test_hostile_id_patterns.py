"""Ids with a newline or other trailing junk never parse (the HTTP side: tests/integration/
test_hostile_ids.py)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from chalicelib.domain import ids
from chalicelib.domain.schemas import CreateRunIn, ListRunsQuery


@pytest.mark.parametrize("value", ["A:1:1\n", "A\n:1:1", "A:1\n:1", "A:1:1\r\n", "A:1:1 ", "A:01:1"])
def test_stage_id_with_newline_is_not_parsed(value):
    assert ids.parse_stage_id(value) is None


@pytest.mark.parametrize("value", ["A:1\n", "A\n:1", "A:1\r\n"])
def test_run_id_with_newline_is_not_parsed(value):
    assert ids.parse_run_id(value) is None


@pytest.mark.parametrize("value", ["web\n", "web\r\n", "\nweb"])
def test_pipeline_name_with_newline_is_not_a_name(value):
    assert not ids.is_pipeline_name(value)
    with pytest.raises(ValidationError):
        CreateRunIn.model_validate({"pipeline": value})
    with pytest.raises(ValidationError):
        ListRunsQuery.model_validate({"pipeline": value})


def test_every_compiled_id_pattern_is_used_whole():
    """A regex check written with .match() (anchored with $) accepts a trailing newline."""
    import chalicelib.api.gocd as gocd
    from chalicelib.domain import auth
    from chalicelib.domain.errors import BadRequest

    with pytest.raises(BadRequest):
        gocd._offset("1\n")
    assert not auth.looks_like_token("st_" + "A" * 43 + "\n")
    assert ids.parse_run_id("web:1") == ("web", 1)  # the plain forms still parse
    assert ids.parse_stage_id("web:1:2") == ("web:1", 2)
