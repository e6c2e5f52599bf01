"""Cron expressions and next fire times (domain/cron.py): fields, steps and ranges, the
day-of-month/day-of-week OR rule, DST gaps and overlaps; properties checked with hypothesis."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import cron
from chalicelib.domain.clock import parse_iso
from chalicelib.domain.cron import CronError, next_fire, parse, zone
from tests.fixtures.cron import field_text


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(("text", "field", "values"), [
    ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
    ("5-20/5 * * * *", "minutes", (5, 10, 15, 20)),
    ("10/20 * * * *", "minutes", (10, 30, 50)),  # N/STEP: from N to the field's end
    ("1,2,3-4 * * * *", "minutes", (1, 2, 3, 4)),
    ("0 9-17/4 * * *", "hours", (9, 13, 17)),
])
def test_steps_ranges_and_lists(text, field, values):
    assert getattr(parse(text), field) == values


def test_names_macros_and_sunday_as_7():
    assert parse("0 0 * jan-mar MON-FRI").months == frozenset({1, 2, 3})
    assert parse("0 0 * * 7").weekdays == frozenset({0}) == parse("0 0 * * sun").weekdays
    assert parse("@daily").expression == "0 0 * * *"
    assert parse("@hourly").minutes == (0,)


@pytest.mark.parametrize(("text", "message"), [
    ("* * *", "has 5 fields"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("* 24 * * *", "hour: 24 is out of range 0-23"),
    ("* * 0 * *", "day of month: 0 is out of range 1-31"),
    ("* * * 13 *", "month: 13 is out of range 1-12"),
    ("* * * * 8", "day of week: 8 is out of range 0-7"),
    ("5-1 * * * *", "runs backwards"),
    ("*/0 * * * *", "step 0 must be between 1 and 60"),
    ("x * * * *", "minute: 'x' is not a number"),
    ("* * * FOO *", "month: 'FOO' is not a number or one of JAN/"),
    ("1,,2 * * * *", "is not '*', 'N', 'A-B'"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4,6,9,11 *", "never fires"),
    ("* " * 60, "at most 100 characters"),
])
def test_bad_expressions_say_what_is_wrong(text, message):
    with pytest.raises(CronError, match=message.replace("*", r"\*").replace("(", r"\(")):
        parse(text)


@pytest.mark.parametrize("name", ["Not/AZone", "../etc/passwd", "/etc/localtime", "", "a" * 65,
                                  "Europe/Paris\n"])
def test_bad_time_zones(name):
    with pytest.raises(CronError, match="IANA time zone"):
        zone(name)


def test_day_of_month_or_day_of_week_when_both_are_restricted():
    friday_13 = parse("0 0 13 * FRI")  # the 13th OR any Friday (Vixie cron, GitLab, GitHub)
    assert next_fire(friday_13, zone("UTC"), utc(2026, 1, 1)) == utc(2026, 1, 2)  # a Friday
    assert next_fire(friday_13, zone("UTC"), utc(2026, 1, 10)) == utc(2026, 1, 13)  # a Tuesday
    only_13th = parse("0 0 13 * *")  # '*' in day of week: the day of month alone decides
    assert next_fire(only_13th, zone("UTC"), utc(2026, 1, 1)) == utc(2026, 1, 13)
    stepped_star = parse("0 0 */2 * MON")  # '*/2' starts with '*': AND, as in Vixie cron
    assert next_fire(stepped_star, zone("UTC"), utc(2026, 1, 1)) == utc(2026, 1, 5)  # odd Monday


def test_leap_day():
    assert next_fire(parse("0 12 29 2 *"), zone("UTC"), utc(2026, 3, 1)) == utc(2028, 2, 29, 12)


NEW_YORK = "America/New_York"


def test_a_time_the_clocks_skip_fires_once_when_they_jump():
    # 8 March 2026, New York: 02:00 EST becomes 03:00 EDT (07:00 UTC); 02:30 does not exist
    daily = parse("30 2 * * *")
    assert next_fire(daily, zone(NEW_YORK), utc(2026, 3, 8, 5)) == utc(2026, 3, 8, 7)
    assert next_fire(daily, zone(NEW_YORK), utc(2026, 3, 8, 7)) == utc(2026, 3, 9, 6, 30)
    every_quarter = parse("*/15 2 * * *")  # four skipped times: one firing, at the jump
    first = next_fire(every_quarter, zone(NEW_YORK), utc(2026, 3, 8, 6, 59))
    assert first == utc(2026, 3, 8, 7)
    assert next_fire(every_quarter, zone(NEW_YORK), first) == utc(2026, 3, 9, 6)  # 02:00 EDT next day


def test_a_time_that_happens_twice_fires_once_at_its_first_occurrence():
    # 1 November 2026, New York: 02:00 EDT becomes 01:00 EST; 01:30 happens at 05:30 and 06:30 UTC
    daily = parse("30 1 * * *")
    first = next_fire(daily, zone(NEW_YORK), utc(2026, 11, 1, 4))
    assert first == utc(2026, 11, 1, 5, 30)
    assert next_fire(daily, zone(NEW_YORK), first) == utc(2026, 11, 2, 6, 30)
    hourly = parse("0 * * * *")  # 01:00 EDT (05:00Z), then 02:00 EST (07:00Z): 01:00 EST is not again
    assert next_fire(hourly, zone(NEW_YORK), utc(2026, 11, 1, 5)) == utc(2026, 11, 1, 7)


def test_a_zone_that_skipped_a_whole_day():
    # Samoa skipped 30 December 2011 entirely (UTC-10 -> UTC+14 at midnight)
    noon = parse("0 12 * * *")
    after = utc(2011, 12, 29, 22, 1)  # 29 Dec 12:01 local
    jump = next_fire(noon, zone("Pacific/Apia"), after)  # 30 Dec 12:00 never happened: at the jump
    assert jump == utc(2011, 12, 30, 10)  # 29 Dec 24:00 -10 = 31 Dec 00:00 +14
    assert next_fire(noon, zone("Pacific/Apia"), jump) == utc(2011, 12, 30, 22)  # 31 Dec 12:00 +14


# ---- properties --------------------------------------------------------------------------------

ZONES = ["UTC", NEW_YORK, "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago",
         "Pacific/Chatham"]


@st.composite
def expressions(draw):
    parts = [draw(field_text(0, 59)), draw(field_text(0, 23)), draw(field_text(1, 28)),
             draw(field_text(1, 12)), draw(field_text(0, 7))]
    return " ".join(parts)


instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1),
                        timezones=st.just(UTC))


def brute_force_values(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        if base == "*":
            a, b = low, high
        elif "-" in base:
            a, b = map(int, base.split("-"))
        else:
            a = int(base)
            b = high if step else a
        values |= {v for v in range(a, b + 1) if (v - a) % int(step or 1) == 0}
    return values


@given(expressions())
def test_parsed_fields_are_the_values_the_text_names(text):
    parsed = parse(text)
    parts = text.split()
    assert set(parsed.minutes) == brute_force_values(parts[0], 0, 59)
    assert set(parsed.hours) == brute_force_values(parts[1], 0, 23)
    assert parsed.days == brute_force_values(parts[2], 1, 31)
    assert parsed.months == brute_force_values(parts[3], 1, 12)
    assert parsed.weekdays == {v % 7 for v in brute_force_values(parts[4], 0, 7)}


@settings(max_examples=150, deadline=None)
@given(expressions(), st.sampled_from(ZONES), instants, st.floats(0, 1, exclude_max=True))
def test_next_fire_is_later_matching_and_skips_nothing(text, name, after, fraction):
    parsed, tz = parse(text), zone(name)
    fired = next_fire(parsed, tz, after)
    assert fired > after
    wall = fired.astimezone(tz)
    # a time skipped by a DST gap fires at the jump: the first wall time after the gap (e.g.
    # America/Santiago 2020-09-06 00:00 -> 01:00), an instant whose own wall time may not match
    at_jump = fired == cron._jump_instant(wall.replace(tzinfo=None) - timedelta(minutes=1), tz)
    if cron._exists(wall.replace(tzinfo=None), tz) and wall.fold == 0 and not at_jump:
        assert parsed.matches(wall.replace(tzinfo=None))  # a time of the expression, first occurrence
    else:
        assert at_jump or parsed.matches(wall.replace(tzinfo=None, fold=0))
    # nothing fires in between: from any instant before it, the next firing is the same one
    between = min(after + (fired - after) * fraction, fired - timedelta(microseconds=1))
    assert next_fire(parsed, tz, between) == fired


@settings(max_examples=60, deadline=None)
@given(expressions(), instants)
def test_in_utc_the_next_fire_is_the_first_matching_minute(text, after):
    """A brute-force reference for the day rules: walk minute by minute (bounded window)."""
    parsed = parse(text)
    fired = next_fire(parsed, zone("UTC"), after)
    moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = min(fired, moment + timedelta(days=3))
    while moment < limit:
        assert not parsed.matches(moment.replace(tzinfo=None)), moment
        moment += timedelta(minutes=1)
    if fired == moment:
        assert parsed.matches(fired.replace(tzinfo=None))


@pytest.mark.parametrize(("text", "after", "expected"), [
    ("0 0 29 2 */7", "2088-03-01T00:00:00Z", "2128-02-29T00:00:00Z"),  # Sunday 29 February, across 2100
    ("* * 20 1 */7", "2019-01-21T00:00:00Z", "2030-01-20T00:00:00Z"),  # Sunday 20 January: 11 years
])
def test_the_rarest_and_of_a_date_and_a_weekday_is_found(text, after, expected):
    """A day of week written with '*' ANDs with a day of month: every such expression that
    parses fires, at worst 40 years on; the search reaches that far instead of failing."""
    assert next_fire(parse(text), zone("UTC"), parse_iso(after)) == parse_iso(expected)
