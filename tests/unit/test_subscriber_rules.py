"""Where we deliver events and which ones: the subscriber URL policy (the SSRF stance, each
refusal with its own message naming the field), the address check at delivery, subscription
filters, and the event body subscribers receive and sign over."""
from __future__ import annotations

import hashlib
import json

import pytest

from chalicelib.domain import events
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.events import StateChange, SubscriptionFilter, check_subscriber_url

NO_CREDENTIALS = "url must not carry credentials; subscribers verify the signature"
HTTPS_ONLY = "url must be https (http://127.0.0.1 only when STAGETRACK_ALLOW_LOCAL_SUBSCRIBERS is set)"
NOT_PRIVATE = ("url must not point at a private, loopback or link-local address "
               "(also not one embedded in an IPv6 address)")
NOT_SHORTHAND = ("url host must be a host name or a plain IPv4/IPv6 address "
                 "(no shorthand, octal, hex or zone id)")


@pytest.mark.parametrize("url, allow_local, message", [
    ("https://[::1", False, "url is not a valid URL"),
    ("https://example.com:99999/x", False, "url is not a valid URL"),
    ("https:///path", False, "url needs a host"),
    ("https://user:pw@example.com/", False, NO_CREDENTIALS),
    ("https://user@example.com/", False, NO_CREDENTIALS),
    ("https://example.com/#frag", False, "url must not have a #fragment"),
    ("http://example.com/", False, HTTPS_ONLY),
    ("http://example.com/", True, HTTPS_ONLY),
    ("ftp://127.0.0.1/", True, HTTPS_ONLY),
    ("http://127.0.0.1:8080/", False, HTTPS_ONLY),
    ("https://localhost/", False, "url must not point at this machine"),
    ("https://127.0.0.1/", False, "url must not point at this machine"),
    ("https://2130706433/", False, NOT_SHORTHAND),
    ("https://127.1/", False, NOT_SHORTHAND),
    ("https://0x7f.1/", False, NOT_SHORTHAND),
    ("https://example.0x10/", False, NOT_SHORTHAND),
    ("https://10.0.0.1/", False, NOT_PRIVATE),
    ("https://169.254.169.254/", False, NOT_PRIVATE),
    ("https://[::ffff:10.0.0.1]/", False, NOT_PRIVATE),
    ("https://[64:ff9b::a00:1]/", False, NOT_PRIVATE),
    ("https://[2002:a00:1::]/", False, NOT_PRIVATE),
    ("https://[2001::1]/", False, NOT_PRIVATE),
    ("https://[::a00:1]/", False, NOT_PRIVATE),
    ("https://10.0.0.1/", True, NOT_PRIVATE),
    ("https://example.com:0/", False, "url has an invalid port"),
])
def test_a_subscriber_url_is_refused_with_its_reason(url, allow_local, message):
    with pytest.raises(ValidationFailed) as raised:
        check_subscriber_url(url, allow_local=allow_local)
    assert (raised.value.message, raised.value.details) == (message, [{"field": "url"}])


@pytest.mark.parametrize("url, allow_local", [
    ("https://example.com/hook", False),
    ("https://EXAMPLE.com:8443/hook?x=1", False),
    ("https://8.8.8.8/", False),
    ("https://[2606:4700::1111]/", False),
    ("https://[::ffff:8.8.8.8]/", False),
    ("https://example.com:1/", False),
    ("https://example.com:65535/", False),
    ("http://127.0.0.1:8080/hook", True),
    ("http://localhost/hook", True),
    ("https://127.0.0.1/", True),
    ("http://[::1]:9000/", True),
])
def test_a_public_https_url_is_taken_as_is(url, allow_local):
    assert check_subscriber_url(url, allow_local=allow_local) == url


@pytest.mark.parametrize("address, allow_local, allowed", [
    ("8.8.8.8", False, True),
    ("10.1.2.3", False, False),
    ("127.0.0.1", False, False),
    ("127.0.0.1", True, True),
    ("::1", True, True),
    ("::1", False, False),
    ("::", True, False),
    ("::ffff:127.0.0.1", True, False),   # embedded loopback: never, whatever allow_local says
    ("::ffff:8.8.8.8", False, True),
    ("64:ff9b::808:808", False, True),
    ("64:ff9b::a00:1", False, False),
    ("64:ff9b:1::808:808", False, False),
    ("2002:808:808::1", False, True),
    ("2002:a00:1::1", False, False),
    ("2001:0:4136:e378::1", False, False),
    ("::808:808", False, False),
    ("fe80::1%eth0", False, False),
    ("not an address", True, False),
])
def test_an_address_is_connected_to_only_when_public(address, allow_local, allowed):
    assert events.address_allowed(address, allow_local=allow_local) is allowed


def _change(**fields):
    base = {"id": "evt_1", "type": events.STAGE_CHANGED, "time": "2026-01-01T00:00:00.000Z",
            "pipeline": "web", "run_id": "web:1", "stage_id": "web:1:1", "stage_name": "build",
            "old_status": "IDLE",
            "new_status": "IN_PROGRESS", "attempt": 1}
    return StateChange(**{**base, **fields})


def test_the_event_body_is_compact_json_in_a_fixed_shape():
    change = _change()
    assert change.detail_type == "stagetrack.stage.status-changed"
    assert change.body() == (
        '{"id":"evt_1","type":"stage.status-changed","time":"2026-01-01T00:00:00.000Z","pipeline":"web",'
        '"runId":"web:1","stageId":"web:1:1","stageName":"build","oldStatus":"IDLE","newStatus":"IN_PROGRESS",'
        '"attempt":1}')
    assert json.loads(change.body()) == change.as_dict()


@pytest.mark.parametrize("filt, matched", [
    (SubscriptionFilter(("*",)), True),
    (SubscriptionFilter(("stage.status-changed",)), True),
    (SubscriptionFilter(("run.status-changed",)), False),
    (SubscriptionFilter(("*",), pipelines=("web",)), True),
    (SubscriptionFilter(("*",), pipelines=("api",)), False),
    (SubscriptionFilter(("*",), statuses=("IN_PROGRESS", "SUCCESS")), True),
    (SubscriptionFilter(("*",), statuses=("SUCCESS",)), False),
    (SubscriptionFilter(("*",), pipelines=(), statuses=None), False),
])
def test_a_subscription_gets_the_events_its_filter_names(filt, matched):
    assert filt.matches(_change()) is matched


def test_a_delivery_id_is_the_same_for_the_same_event_and_subscriber_only():
    expected = "dlv_" + hashlib.sha256(b"evt_1|sub_1").hexdigest()[:24]
    assert events.delivery_id("evt_1", "sub_1") == expected
    assert events.delivery_id("evt_1", "sub_2") != expected
