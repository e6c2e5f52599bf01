"""Settings from the environment: a wrong value names the variable and what it accepts (issue 10, item 8)."""
from __future__ import annotations

import pytest

from chalicelib.settings import Settings, SettingsError


@pytest.mark.parametrize("raw, value", [
    ("true", True), ("TRUE", True), ("True", True), (" yes ", True), ("1", True), ("On", True),
    ("false", False), ("FALSE", False), ("False", False), ("no", False), ("0", False), ("off", False),
    ("", False),
])
def test_booleans_in_any_case(raw, value):
    settings = Settings.from_env({"STAGETRACK_LOCAL_TICKER": raw, "STAGETRACK_ALLOW_LOCAL_SUBSCRIBERS": raw})
    assert settings.local_ticker is value and settings.allow_local_subscribers is value


@pytest.mark.parametrize("name", ["STAGETRACK_LOCAL_TICKER", "STAGETRACK_ALLOW_LOCAL_SUBSCRIBERS"])
@pytest.mark.parametrize("raw", ["maybe", "tru", "2", "enabled"])
def test_a_bad_boolean_names_the_variable_and_the_accepted_values(name, raw):
    with pytest.raises(SettingsError) as error:
        Settings.from_env({name: raw})
    assert str(error.value) == f"{name} must be true or false (also 1/0, yes/no, on/off), got {raw!r}"


@pytest.mark.parametrize("raw", ["", "ab", "a b", "t/able", "x" * 256, "tåble"])
def test_a_bad_table_name_is_refused(raw):
    with pytest.raises(SettingsError, match=r"^STAGETRACK_TABLE must be a DynamoDB table name: 3 to 255"):
        Settings.from_env({"STAGETRACK_TABLE": raw})


def test_table_name_default_and_valid_value():
    assert Settings.from_env({}).table_name == "stagetrack"
    assert (
        Settings.from_env({"STAGETRACK_TABLE": "stagetrack-prod.v2_x"}).table_name == "stagetrack-prod.v2_x"
    )


@pytest.mark.parametrize("name, raw, message", [
    ("STAGETRACK_MAX_BODY_BYTES", "64k", "a whole number from 1024 to 10485760"),
    ("STAGETRACK_MAX_BODY_BYTES", "0", "a whole number from 1024 to 10485760"),
    ("STAGETRACK_RATE_LIMIT_PER_MINUTE", "-5", "a whole number from 1 to 1000000"),
    ("STAGETRACK_RATE_LIMIT_PER_MINUTE", "1.5", "a whole number from 1 to 1000000"),
    ("STAGETRACK_DELIVERY_MAX_ATTEMPTS", "0", "a whole number from 1 to 50"),
    ("STAGETRACK_DELIVERY_MAX_ATTEMPTS", "9" * 50, "a whole number from 1 to 50"),
    ("STAGETRACK_TICKER_SECONDS", "nan", "a number of seconds from 0.01 to 3600"),
    ("STAGETRACK_TICKER_SECONDS", "inf", "a number of seconds from 0.01 to 3600"),
    ("STAGETRACK_TICKER_SECONDS", "0", "a number of seconds from 0.01 to 3600"),
    ("STAGETRACK_DELIVERY_TIMEOUT_SECONDS", "five", "a number of seconds from 0.1 to 60"),
    ("STAGETRACK_TIMER_HORIZON_SECONDS", "86401", "a whole number from 0 to 86400"),
    ("STAGETRACK_TIMER_HORIZON_SECONDS", "1h", "a whole number from 0 to 86400"),
])
def test_bad_numbers_name_the_variable_and_the_range(name, raw, message):
    with pytest.raises(SettingsError) as error:
        Settings.from_env({name: raw})
    shown = raw if len(raw) <= 40 else raw[:40] + "..."
    assert str(error.value) == f"{name} must be {message}, got {shown!r}"


def test_numbers_in_range_are_read():
    settings = Settings.from_env(
        {
            "STAGETRACK_MAX_BODY_BYTES": "2048",
            "STAGETRACK_RATE_LIMIT_PER_MINUTE": " 60 ",
            "STAGETRACK_TICKER_SECONDS": "0.5",
            "STAGETRACK_DELIVERY_MAX_ATTEMPTS": "3",
            "STAGETRACK_DELIVERY_TIMEOUT_SECONDS": "2.5",
            "STAGETRACK_TIMER_HORIZON_SECONDS": "0",
        }
    )
    assert settings.timer_horizon_seconds == 0
    assert Settings.from_env({}).timer_horizon_seconds == 3600
    assert (settings.max_body_bytes, settings.rate_limit_per_minute, settings.ticker_interval_seconds,
            settings.delivery_max_attempts, settings.delivery_timeout_seconds) == (2048, 60, 0.5, 3, 2.5)


