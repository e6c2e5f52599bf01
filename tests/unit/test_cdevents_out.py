"""integrations/cdevents.py (out): our state changes as CDEvents (spec v0.4.1), pure — every mapping row,
the exact events, every event validated against the official v0.4.1 JSON schemas (vendored in
tests/fixtures/cdevents-schemas/0.4.1, $refs resolved there only), the CloudEvents headers,
and what our own inbound parser makes of them."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from chalicelib.domain.events import RUN_CHANGED, STAGE_CHANGED, ExternalUpdate, StateChange
from chalicelib.integrations import cdevents
from chalicelib.integrations.cdevents import parse as parse_cdevent
from chalicelib.integrations.cdevents import parse_cloudevent

TIME = "2026-03-20T17:17:15.760Z"
QUEUED, STARTED = cdevents.PIPELINERUN_QUEUED, cdevents.PIPELINERUN_STARTED
FINISHED = cdevents.PIPELINERUN_FINISHED
TASK_STARTED, TASK_FINISHED = cdevents.TASKRUN_STARTED, cdevents.TASKRUN_FINISHED


def run_change(old, new, **extra) -> StateChange:
    return StateChange(id="evt_run", type=RUN_CHANGED, time=TIME, pipeline="web", run_id="web:1",
                       stage_id=None, stage_name=None, old_status=old, new_status=new, attempt=None, **extra)


def stage_change(old, new, attempt=1) -> StateChange:
    return StateChange(id="evt_stage", type=STAGE_CHANGED, time=TIME, pipeline="web", run_id="web:1",
                       stage_id="web:1:2", stage_name="deploy-prod", old_status=old, new_status=new,
                       attempt=attempt)


@pytest.mark.parametrize("old, new, expected", [
    (None, "IDLE", QUEUED),  # created
    (None, "IN_PROGRESS", QUEUED),  # created by a sender already running: announced as queued
    (None, "SUCCESS", FINISHED),  # created by a sender already done: born finished, outcome and all
    (None, "CANCELLED", FINISHED),
    ("IDLE", "IN_PROGRESS", STARTED),
    ("FAILURE", "IN_PROGRESS", STARTED),  # a retry starts it again
    ("CANCELLED", "IN_PROGRESS", STARTED),
    ("SUCCESS", "IN_PROGRESS", STARTED),
    ("IN_PROGRESS", "SUCCESS", FINISHED),
    ("IN_PROGRESS", "FAILURE", FINISHED),
    ("IN_PROGRESS", "TIMED_OUT", FINISHED),
    ("IN_PROGRESS", "CANCELLED", FINISHED),
    ("IDLE", "SKIPPED", FINISHED),
    ("IDLE", "CANCELLED", FINISHED),  # cancelled before anything started
    ("WAITING_FOR_APPROVAL", "FAILURE", FINISHED),  # a rejected gate
    ("FAILURE", "CANCELLED", FINISHED),  # its remaining stages cancelled: finished again, as cancelled
    ("IDLE", "WAITING_FOR_APPROVAL", None),
    ("IN_PROGRESS", "WAITING_FOR_APPROVAL", None),
    ("WAITING_FOR_APPROVAL", "IN_PROGRESS", None),  # through a gate: it was running already
    ("FAILURE", "IDLE", None),  # retry of every stage, none started yet
    ("IN_PROGRESS", None, None),  # deleted
    ("SUCCESS", None, None),
])
def test_run_changes_map_to_pipeline_run_events(old, new, expected):
    assert cdevents.cdevent_type(run_change(old, new)) == expected
    event = cdevents.to_cdevent(run_change(old, new))
    assert (event["context"]["type"] if event else None) == expected


@pytest.mark.parametrize("old, new, attempt, expected", [
    ("IDLE", "IN_PROGRESS", 1, TASK_STARTED),
    ("WAITING_FOR_APPROVAL", "IN_PROGRESS", 1, TASK_STARTED),  # approved
    (None, "IN_PROGRESS", 1, TASK_STARTED),  # born running (a sender's job)
    ("IN_PROGRESS", "IN_PROGRESS", 2, TASK_STARTED),  # a sender's new attempt, already running
    ("IN_PROGRESS", "SUCCESS", 1, TASK_FINISHED),
    ("IN_PROGRESS", "FAILURE", 1, TASK_FINISHED),
    ("IN_PROGRESS", "TIMED_OUT", 1, TASK_FINISHED),
    ("IN_PROGRESS", "CANCELLED", 1, TASK_FINISHED),
    ("IDLE", "SKIPPED", 1, TASK_FINISHED),
    ("IDLE", "CANCELLED", 1, TASK_FINISHED),
    ("WAITING_FOR_APPROVAL", "FAILURE", 1, TASK_FINISHED),  # rejected
    (None, "SUCCESS", 1, TASK_FINISHED),  # born finished (a job first seen completed)
    ("IDLE", "WAITING_FOR_APPROVAL", 1, None),
    ("FAILURE", "IDLE", 2, None),  # retried: the new attempt has not started
    ("IDLE", None, 1, None),  # deleted
    ("SUCCESS", None, 1, None),
])
def test_stage_changes_map_to_task_run_events(old, new, attempt, expected):
    assert cdevents.cdevent_type(stage_change(old, new, attempt)) == expected
    event = cdevents.to_cdevent(stage_change(old, new, attempt))
    assert (event["context"]["type"] if event else None) == expected


def test_a_created_run_is_a_queued_pipeline_run():
    assert cdevents.to_cdevent(run_change(None, "IDLE")) == {
        "context": {"version": "0.4.1", "id": "evt_run", "source": "/stagetrack/web",
                    "type": "dev.cdevents.pipelinerun.queued.0.2.0", "timestamp": TIME},
        "subject": {"id": "web:1", "source": "/stagetrack/web", "type": "pipelineRun",
                    "content": {"pipelineName": "web", "url": "/api/runs/web:1"}},
    }


def test_a_failed_run_is_a_finished_pipeline_run_with_outcome_and_errors():
    assert cdevents.to_cdevent(run_change("IN_PROGRESS", "FAILURE")) == {
        "context": {"version": "0.4.1", "id": "evt_run", "source": "/stagetrack/web",
                    "type": "dev.cdevents.pipelinerun.finished.0.2.0", "timestamp": TIME},
        "subject": {"id": "web:1", "source": "/stagetrack/web", "type": "pipelineRun",
                    "content": {"pipelineName": "web", "url": "/api/runs/web:1", "outcome": "failure",
                                "errors": "run web:1 ended FAILURE"}},
    }


def test_a_started_stage_is_a_task_run_of_its_pipeline_run():
    assert cdevents.to_cdevent(stage_change("IDLE", "IN_PROGRESS")) == {
        "context": {"version": "0.4.1", "id": "evt_stage", "source": "/stagetrack/web",
                    "type": "dev.cdevents.taskrun.started.0.2.0", "timestamp": TIME},
        "subject": {"id": "web:1:2", "source": "/stagetrack/web", "type": "taskRun",
                    "content": {"taskName": "deploy-prod", "url": "/api/stages/web:1:2",
                                "pipelineRun": {"id": "web:1", "source": "/stagetrack/web"}}},
    }


def test_a_timed_out_stage_is_a_failed_task_run_whose_errors_say_timed_out():
    event = cdevents.to_cdevent(stage_change("IN_PROGRESS", "TIMED_OUT"))
    assert event["context"]["type"] == "dev.cdevents.taskrun.finished.0.2.0"
    assert event["subject"]["content"] == {
        "taskName": "deploy-prod", "url": "/api/stages/web:1:2",
        "pipelineRun": {"id": "web:1", "source": "/stagetrack/web"},
        "outcome": "failure", "errors": "stage deploy-prod of run web:1 ended TIMED_OUT"}


@pytest.mark.parametrize("status, outcome, errors", [
    ("SUCCESS", "success", None),
    ("SKIPPED", "success", None),
    ("FAILURE", "failure", "ended FAILURE"),
    ("TIMED_OUT", "failure", "ended TIMED_OUT"),
    ("CANCELLED", "error", "ended CANCELLED"),  # 0.4.1 has no "cancel": stopped before a verdict
])
def test_outcomes_of_finished_runs_and_stages(status, outcome, errors):
    for change in (run_change("IN_PROGRESS", status), stage_change("IN_PROGRESS", status)):
        content = cdevents.to_cdevent(change)["subject"]["content"]
        assert content["outcome"] == outcome
        if errors is None:
            assert "errors" not in content
        else:
            assert content["errors"].endswith(errors)


def test_only_finished_events_carry_an_outcome():
    for change in (run_change(None, "IDLE"), run_change("IDLE", "IN_PROGRESS"),
                   stage_change("IDLE", "IN_PROGRESS")):
        content = cdevents.to_cdevent(change)["subject"]["content"]
        assert "outcome" not in content and "errors" not in content


def test_events_keep_to_the_fields_the_v0_4_schemas_allow():
    """The v0.4 schemas close every object (additionalProperties: false): context
    version/id/source/type/timestamp (schemaUri optional), subject id/source/type/content,
    pipelineRun content pipelineName/url/outcome/errors, taskRun content taskName/url/
    pipelineRun{id, source}/outcome/errors."""
    allowed = {"pipelineRun": {"pipelineName", "url", "outcome", "errors"},
               "taskRun": {"taskName", "url", "pipelineRun", "outcome", "errors"}}
    changes = [run_change(None, "IDLE"), run_change("IDLE", "IN_PROGRESS"),
               run_change("IN_PROGRESS", "CANCELLED"), stage_change("IDLE", "IN_PROGRESS"),
               stage_change("IN_PROGRESS", "FAILURE")]
    for change in changes:
        event = cdevents.to_cdevent(change)
        assert set(event) == {"context", "subject"}
        assert set(event["context"]) == {"version", "id", "source", "type", "timestamp"}
        assert set(event["subject"]) == {"id", "source", "type", "content"}
        kind = event["subject"]["type"]
        assert set(event["subject"]["content"]) <= allowed[kind]
        mandatory = "pipelineName" if kind == "pipelineRun" else "taskName"
        assert event["subject"]["content"][mandatory]
        if kind == "taskRun":
            assert set(event["subject"]["content"]["pipelineRun"]) == {"id", "source"}


def test_the_event_id_is_the_changes_id_so_duplicates_are_the_same_event():
    first = cdevents.body(cdevents.to_cdevent(stage_change("IDLE", "IN_PROGRESS")))
    again = cdevents.body(cdevents.to_cdevent(stage_change("IDLE", "IN_PROGRESS")))
    assert first == again and json.loads(first)["context"]["id"] == "evt_stage"


def test_the_body_is_compact_json_and_the_headers_come_from_its_context():
    text = cdevents.body(cdevents.to_cdevent(run_change("IN_PROGRESS", "SUCCESS")))
    assert text.startswith('{"context":{"version":"0.4.1","id":"evt_run",') and ": " not in text
    assert cdevents.cloudevent_headers(text) == {
        "ce-specversion": "1.0", "ce-id": "evt_run", "ce-source": "/stagetrack/web",
        "ce-type": "dev.cdevents.pipelinerun.finished.0.2.0", "ce-time": TIME}


@pytest.mark.parametrize("text", ["not json", "[]", "{}", '{"context": []}',
                                  '{"context": {"id": "x", "source": "/s", "type": "t"}}',
                                  '{"context": {"id": 1, "source": "/s", "type": "t", "timestamp": "x"}}',
                                  '{"context": {"id": "", "source": "/s", "type": "t", "timestamp": "x"}}'])
def test_headers_of_something_that_is_not_a_cdevent_are_refused(text):
    with pytest.raises(ValueError):
        cdevents.cloudevent_headers(text)


# ---- what our own inbound parser (POST /api/webhooks/cdevents) makes of them -------------------

def read_back(change: StateChange):
    text = cdevents.body(cdevents.to_cdevent(change))
    headers = {"content-type": "application/json", **cdevents.cloudevent_headers(text)}
    return parse_cdevent(parse_cloudevent(headers, text.encode()), "mirror")


@pytest.mark.parametrize("new, run_status", [
    ("SUCCESS", "SUCCESS"), ("SKIPPED", "SUCCESS"), ("FAILURE", "FAILURE"), ("TIMED_OUT", "FAILURE"),
    ("CANCELLED", "FAILURE"),  # outcome "error": the spec's word for a run that got no verdict
])
def test_our_inbound_parser_reads_a_finished_run_back(new, run_status):
    update = read_back(run_change("IN_PROGRESS", new))
    assert isinstance(update, ExternalUpdate)
    assert (update.namespace, update.run_key, update.pipeline, update.run_status.value, update.stages) == (
        "cdevents:mirror", "web:1", "web", run_status, ())
    assert update.time.isoformat() == "2026-03-20T17:17:15.760000+00:00"


@pytest.mark.parametrize("old, new, stage_status", [
    ("IDLE", "IN_PROGRESS", "IN_PROGRESS"), ("IN_PROGRESS", "SUCCESS", "SUCCESS"),
    ("IN_PROGRESS", "FAILURE", "FAILURE"), ("IN_PROGRESS", "TIMED_OUT", "FAILURE"),
    ("IN_PROGRESS", "CANCELLED", "FAILURE"), ("IDLE", "SKIPPED", "SUCCESS"),
])
def test_our_inbound_parser_reads_a_stage_back_as_a_stage_of_the_same_run(old, new, stage_status):
    update = read_back(stage_change(old, new))
    assert (update.run_key, update.run_status) == ("web:1", None)
    (stage,) = update.stages
    assert (stage.name, stage.type, stage.status.value) == ("deploy-prod", "DEPLOY_PROD", stage_status)


def test_our_inbound_parser_reads_queued_and_started_runs_back_as_the_run_existing():
    for change in (run_change(None, "IDLE"), run_change("IDLE", "IN_PROGRESS")):
        update = read_back(change)
        assert (update.run_key, update.pipeline, update.run_status, update.stages) == (
            "web:1", "web", None, ())


# ---- every event we can emit, against the official v0.4.1 JSON schemas ------------------------

SCHEMAS = Path(__file__).parent.parent / "fixtures" / "cdevents-schemas" / cdevents.SPEC_VERSION
SCHEMA_FILES = {QUEUED: "pipelinerunqueued.json", STARTED: "pipelinerunstarted.json",
                FINISHED: "pipelinerunfinished.json", TASK_STARTED: "taskrunstarted.json",
                TASK_FINISHED: "taskrunfinished.json"}
STATUSES = ["IDLE", "IN_PROGRESS", "WAITING_FOR_APPROVAL", "SUCCESS", "FAILURE", "CANCELLED", "TIMED_OUT",
            "SKIPPED"]


def _no_network(uri: str):
    raise NoSuchResource(ref=uri)  # a $ref outside the vendored files is a test failure, not a fetch


def _validators() -> dict[str, Draft202012Validator]:
    resources = [
        Resource.from_contents(json.loads(path.read_text())) for path in sorted(SCHEMAS.rglob("*.json"))
    ]
    registry = Registry(retrieve=_no_network).with_resources((r.id(), r) for r in resources)
    return {event_type: Draft202012Validator(json.loads((SCHEMAS / name).read_text()), registry=registry,
                                             format_checker=FormatChecker())
            for event_type, name in SCHEMA_FILES.items()}


VALIDATORS = _validators()


def every_emitted_event():
    """Every (old, new) status pair of runs and stages, with and without a public URL: all that
    to_cdevent can produce (each type, each outcome)."""
    for base in (None, "https://ci.example.com/prod"):
        for old in [None, *STATUSES]:
            for new in [*STATUSES, None]:
                for change in (
                    run_change(old, new),
                    stage_change(old, new),
                    stage_change(old, new, attempt=2),
                ):
                    event = cdevents.to_cdevent(change, base)
                    if event is not None:
                        yield change, base, event


def test_every_event_type_and_outcome_is_emitted_and_validates_against_the_official_schema():
    seen = set()
    for change, base, event in every_emitted_event():
        event_type = event["context"]["type"]
        errors = sorted(VALIDATORS[event_type].iter_errors(event), key=str)
        assert not errors, (change, [e.message for e in errors])
        content = event["subject"]["content"]
        if "outcome" in content:
            assert content["outcome"] in cdevents.SPEC_OUTCOMES  # the v0.4.1 text's values
        # uri-reference / uri formats: the format checker needs an optional package, so check here
        for reference in (event["context"]["source"], event["subject"]["source"], content["url"]):
            assert " " not in reference and urlsplit(reference).path.startswith("/")
        if base is not None:
            assert content["url"].startswith(base + "/api/")
        seen.add((event_type, content.get("outcome")))
    assert seen == {(QUEUED, None), (STARTED, None), (TASK_STARTED, None),
                    (FINISHED, "success"), (FINISHED, "failure"), (FINISHED, "error"),
                    (TASK_FINISHED, "success"), (TASK_FINISHED, "failure"), (TASK_FINISHED, "error")}


def test_the_vendored_schemas_do_catch_what_the_spec_forbids():
    """The validators are not vacuous: a started pipelineRun without url, an extra field, a
    wrong type, or a $ref into links all fail or resolve against the vendored files."""
    event = cdevents.to_cdevent(run_change("IDLE", "IN_PROGRESS"))
    del event["subject"]["content"]["url"]
    assert [e.validator for e in VALIDATORS[STARTED].iter_errors(event)] == ["required"]
    event = cdevents.to_cdevent(stage_change("IN_PROGRESS", "FAILURE"))
    event["subject"]["content"]["status"] = "FAILURE"
    assert [e.validator for e in VALIDATORS[TASK_FINISHED].iter_errors(event)] == ["additionalProperties"]
    event = cdevents.to_cdevent(run_change("IN_PROGRESS", "SUCCESS"))
    event["context"]["links"] = [{"linkType": "PATH", "from": {"contextId": "evt_1"}}]
    assert list(VALIDATORS[FINISHED].iter_errors(event)) == []
    event["context"]["links"] = [{"linkType": "PATH"}]
    assert list(VALIDATORS[FINISHED].iter_errors(event)) != []
    event["context"]["links"] = []
    event["context"]["timestamp"] = "yesterday"
    assert [e.validator for e in VALIDATORS[FINISHED].iter_errors(event)] == ["format"]


def test_urls_point_at_the_run_and_stage_in_our_api():
    run = cdevents.to_cdevent(run_change("IDLE", "IN_PROGRESS"), "https://ci.example.com/prod/")
    stage = cdevents.to_cdevent(stage_change("IDLE", "IN_PROGRESS"), "https://ci.example.com/prod")
    assert run["subject"]["content"]["url"] == "https://ci.example.com/prod/api/runs/web:1"
    assert stage["subject"]["content"]["url"] == "https://ci.example.com/prod/api/stages/web:1:2"
    assert (
        cdevents.to_cdevent(run_change("IDLE", "IN_PROGRESS"))["subject"]["content"]["url"]
        == "/api/runs/web:1"
    )


@pytest.mark.parametrize("value", ["ftp://ci.example.com", "ci.example.com", "https://", "https://x/?a=1",
                                   "https://x/#top"])
def test_a_public_url_that_is_not_an_http_url_is_refused_at_start(value):
    from chalicelib.settings import Settings

    with pytest.raises(ValueError, match="STAGETRACK_PUBLIC_URL"):
        Settings.from_env({"STAGETRACK_PUBLIC_URL": value})


def test_the_public_url_setting_is_read_without_its_trailing_slash():
    from chalicelib.settings import Settings

    assert Settings.from_env({"STAGETRACK_PUBLIC_URL": "https://ci.example.com/prod/"}).public_url == \
        "https://ci.example.com/prod"
    assert Settings.from_env({}).public_url is None


@pytest.mark.parametrize("reason", ["FAILURE", "TIMED_OUT"])
def test_an_automatic_retry_is_the_ended_attempt_finished_then_the_new_one_started(reason):
    """domain/retries.py: the attempt that failed is a finished task run (its own failure, though
    the stage item went IN_PROGRESS -> RETRY_PENDING), the retry's start a started one."""
    from chalicelib.domain.events import RETRY_SCHEDULED, RETRY_STARTED

    scheduled = StateChange(id="evt_sch", type=RETRY_SCHEDULED, time=TIME, pipeline="web", run_id="web:1",
                            stage_id="web:1:2", stage_name="deploy-prod", old_status="IN_PROGRESS",
                            new_status="RETRY_PENDING", attempt=2,
                            retry={"number": 1, "max": 2, "at": TIME, "reason": reason})
    started = StateChange(id="evt_st", type=RETRY_STARTED, time=TIME, pipeline="web", run_id="web:1",
                          stage_id="web:1:2", stage_name="deploy-prod", old_status="RETRY_PENDING",
                          new_status="IN_PROGRESS", attempt=2, retry={"number": 1, "max": 2})
    gated = StateChange(**{**started.__dict__, "new_status": "WAITING_FOR_APPROVAL"})
    finished, begun = cdevents.to_cdevent(scheduled), cdevents.to_cdevent(started)
    assert finished["context"]["type"] == TASK_FINISHED
    assert (finished["subject"]["content"]["outcome"], finished["subject"]["content"]["errors"]) == (
        "failure", f"stage deploy-prod of run web:1 ended {reason}")
    assert begun["context"]["type"] == TASK_STARTED and "outcome" not in begun["subject"]["content"]
    assert cdevents.to_cdevent(gated) is None  # at its gate again: not running yet
    for event in (finished, begun):
        assert not list(VALIDATORS[event["context"]["type"]].iter_errors(event))
