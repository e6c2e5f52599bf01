"""Over HTTP, a subscriber URL embedding a private IPv4 in an IPv6 form is refused and nothing is
stored (the rules themselves: tests/unit/test_hostile_urls.py)."""
from __future__ import annotations

from tests.integration.test_api_runs import assert_error


def test_creation_over_http_answers_422_and_stores_nothing(client):
    for address in ("::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:a00:1::1", "::10.0.0.1"):
        response = client.post("/api/subscriptions", {"url": f"https://[{address}]/hook", "events": ["*"]})
        assert_error(response, 422, "validation_failed")
    assert client.get("/api/subscriptions").json["items"] == []
