"""Every logger the service writes through is the one JSON, scrubbed handler (issue 10, item 8).

Captured from the real handler's output on stdout (caplog would bypass the formatter).
"""
from __future__ import annotations

import base64
import io
import json
import logging

import pytest

from chalicelib import logging_setup
from chalicelib.logging_setup import REDACTED
from chalicelib.settings import Settings

TOKEN = "st_" + "t0K" * 14 + "x"
WEBHOOK = "whsec_" + "Wq9" * 10
CHOSEN = "my-receivers-own-secret-0123"
BASIC = base64.b64encode(b"alice:hunter2-password").decode()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def app_loaded():
    import app  # noqa: F401  (configures logging as Lambda and chalice local do)

    return app


@pytest.mark.parametrize("name", ["chalicelib.service.ingest", "chalicelib.events.outbound",
                                  "chalicelib.ticker", "stagetrack.anything"])
def test_service_loggers_write_scrubbed_json_lines(app_loaded, capsys, name):
    admin = Settings.from_env().admin_token
    log = logging.getLogger(name)
    log.warning("token %s admin %s auth Basic %s hook %s secret=%s", TOKEN, admin, BASIC, WEBHOOK, CHOSEN)
    try:
        raise RuntimeError(f"failed with {TOKEN} and {{\"secret\": \"{CHOSEN}\"}} for {admin}")
    except RuntimeError:
        log.exception("while holding %s", WEBHOOK)
    out = capsys.readouterr().out
    warning, error = json_lines(out)
    assert warning["logger"] == name and warning["level"] == "WARNING"
    assert error["level"] == "ERROR" and "RuntimeError" in error["exception"]
    assert REDACTED in warning["message"] and REDACTED in error["exception"]
    for value in (TOKEN, TOKEN[3:20], admin, BASIC, WEBHOOK, CHOSEN, "hunter2"):
        assert value not in out


def test_secrets_of_the_settings_are_scrubbed_before_they_are_ever_used(app_loaded, capsys):
    settings = Settings(admin_token="Ädmin-token-with-\"quotes\"-and-ümlauts", secret_key="k" * 40,
                        secret_pepper="pepper-value-1234", previous_secret_keys=("old-key-value-5678",))
    logging_setup.scrub_settings(settings)
    logging.getLogger("chalicelib.settings").warning(
        "values %s %s %s %s", settings.admin_token, settings.secret_key, settings.secret_pepper,
        settings.previous_secret_keys[0])
    out = capsys.readouterr().out
    (line,) = json_lines(out)
    assert line["message"] == f"values {REDACTED} {REDACTED} {REDACTED} {REDACTED}"


def test_in_lambda_the_root_handler_writes_the_same_scrubbed_json(app_loaded, monkeypatch):
    """The Lambda runtime puts its own handler on the root logger; libraries log through it."""
    stream = io.StringIO()
    runtime_handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [runtime_handler])
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "stagetrack-dev")
    logging_setup.configure()
    logging.getLogger("botocore.somewhere").warning("sending Authorization: Bearer %s", TOKEN)
    (line,) = json_lines(stream.getvalue())
    assert line["logger"] == "botocore.somewhere" and TOKEN not in stream.getvalue()
    assert line["message"].startswith("sending Authorization: ") and line["message"].endswith(REDACTED)


def test_words_that_merely_contain_st_are_left_alone():
    assert (
        logging_setup.redact("in test_service_loggers_write_scrubbed")
        == "in test_service_loggers_write_scrubbed"
    )
    assert logging_setup.redact(f"({TOKEN})") == f"({REDACTED})"
