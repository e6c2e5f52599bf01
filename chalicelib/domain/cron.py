"""Cron expressions (five fields) and their next fire time in an IANA time zone. Pure Python.

Fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC), day of week
(0-7 or SUN-SAT; 0 and 7 are Sunday). Each field is a comma list of ``*``, ``N``, ``A-B``, each
optionally with ``/STEP`` (``N/STEP`` means ``N-max/STEP``). The macros ``@yearly``
(``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``) and ``@hourly`` stand for
their usual five fields.

Rules (those of Vixie cron, which GitLab, GitHub and Argo follow, plus two for time zones):
- day of month and day of week: when both are restricted (neither starts with ``*``), a day
  matches if EITHER matches; otherwise both must (a ``*`` matches every day).
- times are wall-clock times in the schedule's time zone. A wall time that does not exist that
  day (the hour skipped when clocks go forward) fires once, at the instant the clocks jump; a
  wall time that happens twice (the hour repeated when clocks go back) fires once, at its first
  occurrence. No instant ever fires twice.
- an expression that can never fire (``0 0 30 2 *``) is refused when parsed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
# (name, low, high, names for low.. in order)
_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
           ("month", 1, 12, MONTHS), ("day of week", 0, 7, WEEKDAYS))
_ITEM = re.compile(r"^(?:(\*)|([0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?)(?:/([0-9]+))?$")
MAX_EXPRESSION = 100
# How far ahead a next fire time is searched. The rarest expressions that parse AND a date with
# one weekday (a day of week written with '*', such as '*/7', ANDs with the day of month): 29
# February on a Sunday recurs every 28 years, and across 2100 (not a leap year) only after 40
# (2088, then 2128); 14,609 days is the longest gap between two such days.
SEARCH_DAYS = 366 * 40 + 2
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # leap year: the most a month has


class CronError(ValueError):
    """An expression or time zone that cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    days_restricted: bool  # the day-of-month field does not start with '*'
    weekdays_restricted: bool

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def matches(self, wall: datetime) -> bool:
        """Whether a wall-clock time (naive, in the schedule's zone) is one of the expression's."""
        return wall.minute in self.minutes and wall.hour in self.hours and self.matches_day(wall.date())


def _value(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> int:
    upper = text.upper()
    if names and upper in names:
        return names.index(upper) + low
    if not text.isdigit():
        choices = f" or one of {'/'.join(names)}" if names else ""
        raise CronError(f"{field}: {text!r} is not a number{choices}")
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"{field}: {number} is out of range {low}-{high}")
    return number


def _field(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        found = _ITEM.match(item)
        if found is None:
            raise CronError(f"{field}: {item!r} is not '*', 'N', 'A-B' or one of them with '/STEP'")
        star, start, end, step_text = found.groups()
        if star:
            first, last = low, high
        else:
            first = _value(start, field, low, high, names)
            last = _value(end, field, low, high, names) if end is not None else (high if step_text else first)
            if last < first:
                raise CronError(f"{field}: range {item!r} runs backwards")
        step = 1
        if step_text is not None:
            step = int(step_text)
            if not 1 <= step <= high - low + 1:
                raise CronError(f"{field}: step {step} must be between 1 and {high - low + 1}")
        values.update(range(first, last + 1, step))
    return values


def parse(expression: str) -> Cron:
    """A ``Cron`` or ``CronError`` naming the field at fault."""
    if not isinstance(expression, str) or len(expression) > MAX_EXPRESSION:
        raise CronError(f"a cron expression is text of at most {MAX_EXPRESSION} characters")
    text = MACROS.get(expression.strip().lower(), expression.strip())
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"a cron expression has 5 fields (minute hour day-of-month month day-of-week); "
                        f"got {len(parts)}")
    sets = [_field(part, name, low, high, names)
            for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    cron = Cron(expression=" ".join(parts), minutes=tuple(sorted(sets[0])), hours=tuple(sorted(sets[1])),
                days=frozenset(sets[2]), months=frozenset(sets[3]), weekdays=weekdays,
                days_restricted=not parts[2].startswith("*"),
                weekdays_restricted=not parts[4].startswith("*"))
    if not (cron.days_restricted and cron.weekdays_restricted) and not any(
            day <= _DAYS_IN_MONTH[month - 1] for month in cron.months for day in cron.days):
        raise CronError(f"{cron.expression!r} never fires: no month it names has such a day")
    return cron


def zone(name: str) -> ZoneInfo:
    """An IANA time zone ("Europe/Paris", "UTC"), or ``CronError``."""
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not re.fullmatch(r"[A-Za-z0-9_+\-/]+", name) \
            or name.startswith("/") or ".." in name:
        raise CronError(f"time zone {name!r} is not an IANA time zone name such as 'Europe/Paris' or 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"time zone {name!r} is not an IANA time zone name such as 'Europe/Paris' or 'UTC'") \
            from None


def _exists(wall: datetime, tz: ZoneInfo) -> bool:
    return datetime.fromtimestamp(wall.replace(tzinfo=tz).timestamp(), tz).replace(tzinfo=None) == wall


def _jump_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """For a wall time the clocks skip: the instant they jump (the first whose wall time is later)."""
    low = int(wall.replace(tzinfo=tz, fold=1).timestamp())  # read with the offset after the jump
    high = int(wall.replace(tzinfo=tz, fold=0).timestamp())  # ... and with the one before it
    low, high = min(low, high), max(low, high)
    while low < high:  # the first second whose wall time is past ``wall``
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).replace(tzinfo=None) > wall:
            high = middle
        else:
            low = middle + 1
    return datetime.fromtimestamp(low, UTC)


def instant_of(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant a wall time fires at: its first occurrence, or the jump over a gap."""
    if _exists(wall, tz):
        return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    return _jump_instant(wall, tz)


def next_fire(cron: Cron, tz: ZoneInfo, after: datetime) -> datetime:
    """The first instant strictly after ``after`` (aware) at which ``cron`` fires in ``tz`` (UTC)."""
    after_utc = after.astimezone(UTC)
    # wall times before ``after``'s own map to instants before it; a margin of hours costs little
    start = after_utc.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0) - timedelta(hours=3)
    day = start.date()
    for _ in range(SEARCH_DAYS):
        if cron.matches_day(day):
            for hour in cron.hours:
                for minute in cron.minutes:
                    wall = datetime(day.year, day.month, day.day, hour, minute)
                    if wall < start:
                        continue
                    instant = instant_of(wall, tz)
                    if instant > after_utc:
                        return instant
        day += timedelta(days=1)
    raise CronError(f"{cron.expression!r} does not fire within {SEARCH_DAYS // 366} years")


# ---- EventBridge Scheduler's six-field cron -----------------------------------------------------
#
# EventBridge Scheduler's ``cron(minutes hours day-of-month month day-of-week year)`` differs from
# the five fields above: day of week is 1-7 (1 = Sunday), exactly one of the two day fields must
# be ``?`` (it cannot say "this day of month OR this weekday"), and the day of week takes no
# ``/STEP``. ``eventbridge_expressions`` writes a parsed expression in that dialect from the sets
# it matches (not from its text), so names, macros, ``*/n``, ranges and lists all come out the
# same way. Our engine (``next_fire``) stays the authority on fire times: an EventBridge schedule
# only wakes the firing function, which fires what the stored schedule says is due.

# EventBridge Scheduler's limit on ScheduleExpression. Never reached: consecutive values are
# written as ranges, so a field is longest with every other value (0,2,...,58 for minutes) and
# the longest expression is about 200 characters (tests/unit/test_cron_eventbridge.py).
EVENTBRIDGE_MAX_EXPRESSION = 256


def _eventbridge_field(values: frozenset[int] | tuple[int, ...], low: int, high: int, *,
                       steps: bool = True, shift: int = 0) -> str:
    """``*``, ``A/STEP`` (a progression from A to the field's end, when ``steps``), or a comma
    list of ``N`` and ``A-B``; ``shift`` is added to every value written (day of week 0-6 -> 1-7)."""
    ordered = sorted(values)
    if ordered == list(range(low, high + 1)):
        return "*"
    if steps and len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(ordered[0], high + 1, step)):
            return f"{ordered[0] + shift}/{step}"
    parts: list[str] = []
    start = previous = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(f"{start + shift}" if start == previous else f"{start + shift}-{previous + shift}")
        if value is not None:
            start = previous = value
    return ",".join(parts)


def _some_day_exists(cron: Cron) -> bool:
    return any(day <= _DAYS_IN_MONTH[month - 1] for month in cron.months for day in cron.days)


def eventbridge_expressions(cron: Cron) -> tuple[str, ...]:
    """The EventBridge Scheduler ``cron(...)`` expressions whose fire times together are this
    expression's wall times (in the same time zone); ``()`` when none can say it.

    - one day field restricted (or neither): the other becomes ``?``; both days AND together
      there, so when both sets are partial (``0 0 */2 * MON``: odd days that are Mondays)
      EventBridge cannot say it: ``()``;
    - both restricted: standard cron ORs them (``0 0 13 * FRI``: the 13th and every Friday), so
      two expressions, one per day field, unless either matches every day (then ``*``). A day
      of month no named month has (``31 2``) leaves only the weekday expression.
    """
    minutes = _eventbridge_field(cron.minutes, 0, 59)
    hours = _eventbridge_field(cron.hours, 0, 23)
    months = _eventbridge_field(cron.months, 1, 12)
    every_day = cron.days == frozenset(range(1, 32))
    every_weekday = cron.weekdays == frozenset(range(7))
    days = _eventbridge_field(cron.days, 1, 31)
    weekdays = "" if every_weekday else _eventbridge_field(cron.weekdays, 0, 6, steps=False, shift=1)
    if cron.days_restricted and cron.weekdays_restricted:
        if every_day or every_weekday:
            pairs = [("*", "?")]
        else:
            pairs = [(days, "?")] if _some_day_exists(cron) else []
            pairs.append(("?", weekdays))
    elif every_weekday:
        pairs = [(days, "?")]
    elif every_day:
        pairs = [("?", weekdays)]
    else:
        return ()
    return tuple(f"cron({minutes} {hours} {dom} {months} {dow} *)" for dom, dow in pairs)
