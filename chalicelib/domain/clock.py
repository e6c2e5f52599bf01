"""Time is injected everywhere so tests can move it without sleeping."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol, overload


class Clock(Protocol):
    def now(self) -> datetime: ...


def to_millis(moment: datetime) -> datetime:
    """DynamoDB stores ISO strings with milliseconds; truncate so round trips are exact."""
    return moment.replace(microsecond=(moment.microsecond // 1000) * 1000)


class SystemClock:
    def now(self) -> datetime:
        return to_millis(datetime.now(UTC))


@overload
def format_iso(moment: datetime) -> str: ...
@overload
def format_iso(moment: None) -> None: ...
@overload
def format_iso(moment: datetime | None) -> str | None: ...
def format_iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with milliseconds and Z, the reference wire format."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@overload
def parse_iso(text: str) -> datetime: ...
@overload
def parse_iso(text: None) -> None: ...
@overload
def parse_iso(text: str | None) -> datetime | None: ...
def parse_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_millis(moment.astimezone(UTC))


def millis_between(start: datetime, end: datetime) -> int:
    delta = end - start
    return (delta.days * 86_400_000) + (delta.seconds * 1000) + (delta.microseconds // 1000)


def seconds_from_millis(millis: int | None) -> int | float | None:
    """Durations are exact: whole seconds as integers, otherwise milliseconds as a decimal."""
    if millis is None:
        return None
    whole, rest = divmod(millis, 1000)
    return whole if rest == 0 else millis / 1000
