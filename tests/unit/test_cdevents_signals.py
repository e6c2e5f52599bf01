"""CDEvents incidents and rollbacks in (integrations/cdevents.py ``signal``): the fixtures are the
specification's examples (the detection validated against the official v0.4 schema), read into
the signal the insights apply (service/insights.py ``receive_signal``)."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.insights import INCIDENT_DETECTED, INCIDENT_RESOLVED, ROLLED_BACK, SignalReceived
from chalicelib.integrations import cdevents
from tests.fixtures import load, variant

SCHEMA = Path(__file__).parent.parent / "fixtures" / "cdevents-schemas" / "0.4.0" / "incidentdetected.json"


def event(payload: dict, ce_id: str | None = None) -> cdevents.CloudEvent:
    context = payload["context"]
    return cdevents.CloudEvent(id=ce_id or context["id"], source=context["source"], type=context["type"],
                               time=None, data=payload)


def test_the_incident_fixture_is_what_the_official_schema_allows():
    validator = Draft202012Validator(json.loads(SCHEMA.read_text()), format_checker=FormatChecker())
    assert not list(validator.iter_errors(load("cdevents_incident_detected")))
    assert list(validator.iter_errors(variant("cdevents_incident_detected", **{"subject.content": {}})))


def test_an_incident_names_its_service_then_the_source_as_the_pipeline():
    detected = cdevents.parse(event(load("cdevents_incident_detected")), "pagerduty")
    assert detected == SignalReceived(
        kind=INCIDENT_DETECTED, key=json.dumps(["/monitoring/prod1", "F4BD2B55-B6F6-4F44-AF72-BD2D0E7A8708"]),
        at=datetime(2022, 11, 11, 13, 52, 20, 79000, tzinfo=UTC), incident="incident-123",
        candidates=("myApp", "pagerduty"), environment="production", summary="incident.detected")
    resolved = cdevents.parse(event(load("cdevents_incident_resolved")), "pagerduty")
    assert isinstance(resolved, SignalReceived)
    assert (resolved.kind, resolved.incident, resolved.candidates) == (
        INCIDENT_RESOLVED, "incident-123", ("myApp", "pagerduty"))
    assert resolved.key != detected.key


def test_a_rollbacks_subject_is_the_service():
    rolled = cdevents.parse(event(load("cdevents_service_rolledback")), "argo")
    assert isinstance(rolled, SignalReceived)
    assert (rolled.kind, rolled.incident, rolled.candidates, rolled.environment) == (
        ROLLED_BACK, None, ("mySubject123", "argo"), "production")


def test_a_service_named_like_the_source_is_tried_once_and_names_are_sanitized():
    payload = variant("cdevents_incident_detected", **{"subject.content.service": {"id": "shop/web app"}})
    assert cdevents.parse(event(payload), "shop.web-app").candidates == ("shop.web-app",)
    without = variant("cdevents_incident_detected", **{"subject.content": {"environment": {"id": "staging"}}})
    parsed = cdevents.parse(event(without), "pagerduty")
    assert (parsed.candidates, parsed.environment) == (("pagerduty",), "staging")


def test_an_incident_without_its_time_is_422():
    payload = load("cdevents_incident_detected")
    del payload["context"]["timestamp"]
    with pytest.raises(ValidationFailed, match="needs its time"):
        cdevents.parse(event(payload), "pagerduty")


def test_other_ops_events_stay_ignored():
    reported = variant("cdevents_incident_detected",
                       **{"context.type": "dev.cdevents.incident.reported.0.2.0"})
    assert isinstance(cdevents.parse(event(reported), "pagerduty"), cdevents.Ignored)
