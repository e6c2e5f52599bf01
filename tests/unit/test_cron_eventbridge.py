"""Our five-field cron written as EventBridge Scheduler's six fields (domain/cron.py
``eventbridge_expressions``): a table of cases, the schedule's wake-up names, and a property
test checking, against an independent matcher of EventBridge's fields written here, that the
expressions produced fire at exactly our engine's fire times (UTC, where no clock change
intervenes)."""
from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chalicelib.domain import cron
from chalicelib.domain import schedules as rules
from chalicelib.domain.cron import CronError, eventbridge_expressions, next_fire, parse, zone
from tests.fixtures.cron import field_text


@pytest.mark.parametrize(("text", "expected"), [
    ("* * * * *", ("cron(* * * * ? *)",)),
    ("*/5 * * * *", ("cron(0/5 * * * ? *)",)),
    ("5/15 * * * *", ("cron(5/15 * * * ? *)",)),
    ("0-40/10 * * * *", ("cron(0,10,20,30,40 * * * ? *)",)),  # a progression that stops early
    ("10-59/25 * * * *", ("cron(10,35 * * * ? *)",)),
    ("0 */6 * * *", ("cron(0 0/6 * * ? *)",)),
    ("0 9 * * MON-FRI", ("cron(0 9 ? * 2-6 *)",)),
    ("0 9 * * 1-5", ("cron(0 9 ? * 2-6 *)",)),
    ("30 18 * * SUN", ("cron(30 18 ? * 1 *)",)),
    ("30 18 * * 7", ("cron(30 18 ? * 1 *)",)),  # 7 is Sunday too
    ("0 0 * * SAT,SUN", ("cron(0 0 ? * 1,7 *)",)),
    ("0 0 * * */2", ("cron(0 0 ? * 1,3,5,7 *)",)),  # no '/' in EventBridge's day of week
    ("0 0 * * 0-7", ("cron(0 0 * * ? *)",)),
    ("0 0 1 * *", ("cron(0 0 1 * ? *)",)),
    ("0 0 */2 * *", ("cron(0 0 1/2 * ? *)",)),
    ("0 0 1,15 JAN-MAR *", ("cron(0 0 1,15 1-3 ? *)",)),
    ("0 0 1 */3 *", ("cron(0 0 1 1/3 ? *)",)),
    ("5,10-12,40 8-10 * * *", ("cron(5,10-12,40 8-10 * * ? *)",)),
    ("0 0 29 2 *", ("cron(0 0 29 2 ? *)",)),
    ("@hourly", ("cron(0 * * * ? *)",)),
    ("@daily", ("cron(0 0 * * ? *)",)),
    ("@weekly", ("cron(0 0 ? * 1 *)",)),
    ("@monthly", ("cron(0 0 1 * ? *)",)),
    ("@yearly", ("cron(0 0 1 1 ? *)",)),
    # both day fields restricted: standard cron ORs them, EventBridge cannot: two schedules
    ("0 0 13 * FRI", ("cron(0 0 13 * ? *)", "cron(0 0 ? * 6 *)")),
    ("15 4 1,15 * MON-WED", ("cron(15 4 1,15 * ? *)", "cron(15 4 ? * 2-4 *)")),
    # ... unless one of them is every day
    ("0 0 1-31 * MON", ("cron(0 0 * * ? *)",)),
    ("0 0 13 * 0-6", ("cron(0 0 * * ? *)",)),
    # a day of month no named month has: only the weekday half can fire
    ("0 0 31 2 MON", ("cron(0 0 ? 2 2 *)",)),
    # a starred-but-partial day of month ANDs with a restricted weekday: not expressible
    ("0 0 */2 * MON", ()),
    ("0 0 */2 * */2", ()),
])
def test_conversion_table(text, expected):
    assert eventbridge_expressions(parse(text)) == expected


def test_the_longest_expression_fits_eventbridges_limit():
    """Ranges absorb consecutive values, so every other value is each field's longest form."""
    alternating = "0-58/2,1-59/4"  # 0,1,2,4,5,6,8,9,... defeats both '/STEP' and long ranges
    worst = parse(f"{alternating} 0-22/2,1-23/4 1-31/2,2-30/4 1-11/2,2-12/4 0-6/2")
    produced = eventbridge_expressions(worst)
    assert len(produced) == 2
    assert max(len(e) for e in produced) <= cron.EVENTBRIDGE_MAX_EXPRESSION
    sparse = parse("1-57/2 1-21/2 1-29/2 1-11/2 1-5/2")  # every other value: the most items
    assert max(len(e) for e in eventbridge_expressions(sparse)) <= cron.EVENTBRIDGE_MAX_EXPRESSION


def test_wakeup_names_are_deterministic_short_and_of_eventbridges_alphabet():
    schedule_id = "sch_" + "a" * 20
    short = rules.wakeup_names("web", schedule_id)
    assert short == (f"{schedule_id}-0.web", f"{schedule_id}-1.web")
    long_pipeline = "p" * 100
    names = rules.wakeup_names(long_pipeline, schedule_id)
    assert names == rules.wakeup_names(long_pipeline, schedule_id) and len(set(names)) == 2
    assert rules.wakeup_names("q" * 100, schedule_id) != names  # the hash tells pipelines apart
    for name in short + names + rules.wakeup_names("a.b-c_d" * 5, schedule_id):
        assert re.fullmatch(r"[0-9A-Za-z_.\-]{1,64}", name), name


# ---- an independent evaluation of EventBridge's fields ------------------------------------------

EB_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
EB_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


def eb_field(text: str, low: int, high: int, names: list[str], slash: bool) -> set[int] | None:
    """The values an EventBridge field matches (None for '?'), checking its rules as we go."""
    if text == "?":
        return None
    if text == "*":
        return set(range(low, high + 1))

    def value(token: str) -> int:
        number = names.index(token) + low if token in names else int(token)
        assert low <= number <= high, (token, low, high)
        return number

    found: set[int] = set()
    for item in text.split(","):
        if "/" in item:
            assert slash, f"EventBridge takes no '/' in {text!r}"
            start, step = item.split("/")
            first = low if start == "*" else value(start)
            found |= set(range(first, high + 1, int(step)))
        elif "-" in item:
            a, b = item.split("-")
            assert value(a) <= value(b)
            found |= set(range(value(a), value(b) + 1))
        else:
            found.add(value(item))
    return found


class EventBridgeCron:
    """cron(minutes hours day-of-month month day-of-week year), as EventBridge documents it."""

    def __init__(self, expression: str) -> None:
        assert len(expression) <= 256
        inner = re.fullmatch(r"cron\((.*)\)", expression)
        assert inner, expression
        fields = inner.group(1).split(" ")
        assert len(fields) == 6 and fields[5] == "*"
        assert (fields[2] == "?") != (fields[4] == "?"), "exactly one day field must be '?'"
        self.minutes = eb_field(fields[0], 0, 59, [], True)
        self.hours = eb_field(fields[1], 0, 23, [], True)
        self.days = eb_field(fields[2], 1, 31, [], True)
        self.months = eb_field(fields[3], 1, 12, EB_MONTHS, True)
        self.weekdays = eb_field(fields[4], 1, 7, EB_DAYS, False)  # 1 = Sunday

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        if self.days is not None:
            return day.day in self.days
        return (day.isoweekday() % 7) + 1 in self.weekdays

    def next_after(self, after: datetime, days: int) -> datetime | None:
        """The first UTC minute after ``after`` it matches, looking ``days`` ahead."""
        day = after.date()
        for _ in range(days):
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                        if moment > after:
                            return moment
            day += timedelta(days=1)
        return None


def eb_next(expressions: tuple[str, ...], after: datetime) -> datetime | None:
    found = [m for m in (EventBridgeCron(e).next_after(after, cron.SEARCH_DAYS) for e in expressions) if m]
    return min(found) if found else None


@st.composite
def expressions(draw):
    parts = [draw(field_text(0, 59)), draw(field_text(0, 23)), draw(field_text(1, 31)),
             draw(field_text(1, 12, tuple(EB_MONTHS))), draw(field_text(0, 7, tuple(EB_DAYS)))]
    return " ".join(parts)


instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1),
                        timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(expressions(), instants)
def test_eventbridges_fire_times_are_our_engines(text, after):
    """Five fire times in a row, from a random instant: the EventBridge expressions produced
    (one or two) fire exactly when our engine does; an expression they cannot say is refused,
    and then only because both day fields are partial and AND together."""
    try:
        parsed = parse(text)
    except CronError:
        assume(False)
        return
    produced = eventbridge_expressions(parsed)
    if not produced:
        every_day = parsed.days == frozenset(range(1, 32))
        every_weekday = parsed.weekdays == frozenset(range(7))
        assert not (parsed.days_restricted and parsed.weekdays_restricted)
        assert not every_day and not every_weekday
        return
    assert 1 <= len(produced) <= 2
    for one in map(EventBridgeCron, produced):  # the same minutes, hours and months
        assert (one.minutes, one.hours, one.months) == (set(parsed.minutes), set(parsed.hours), parsed.months)
    utc = zone("UTC")
    moment = after
    for _ in range(5):
        ours = next_fire(parsed, utc, moment)
        assert eb_next(produced, moment) == ours, (text, produced, moment)
        moment = ours


@settings(max_examples=100, deadline=None)
@given(expressions())
def test_the_day_rules_agree_over_eight_years_of_days(text):
    """Every day from 2024 to 2031 (leap years, each weekday on each date): a day matches ours
    exactly when it matches one of the EventBridge expressions."""
    try:
        parsed = parse(text)
    except CronError:
        assume(False)
        return
    produced = [EventBridgeCron(e) for e in eventbridge_expressions(parsed)]
    assume(produced)
    day = date(2024, 1, 1)
    while day < date(2032, 1, 1):
        assert parsed.matches_day(day) == any(p.matches_day(day) for p in produced), (text, day)
        day += timedelta(days=1)
    assert all(set(parsed.minutes) == p.minutes and set(parsed.hours) == p.hours for p in produced)
