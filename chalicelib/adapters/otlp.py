"""An insights answer (``GET /api/insights``, issue 14's shape) as OpenTelemetry metrics, POSTed
to an OTLP/HTTP endpoint as protobuf (docs/otel.md has the metric table and the settings).

Names follow the OpenTelemetry CI/CD semantic conventions where they define a figure:
``cicd.pipeline.run.duration`` (a histogram, one point per ``cicd.pipeline.result``: its count
is that result's runs) and ``cicd.pipeline.run.errors`` (failures and timeouts by
``error.type``), with ``cicd.pipeline.name``, ``cicd.pipeline.run.state`` and, per stage,
``cicd.pipeline.task.name``. The conventions have no name for percentiles, rates, MTTR or DORA:
those are gauges under ``stagetrack.`` (a vendor prefix, as the conventions ask). An answer
carries percentiles, not the durations, so the histogram has no buckets and no sum (both are
optional in OTLP); its percentiles are the ``stagetrack.pipeline.run.duration.*`` gauges.

Counts are CUMULATIVE points from the start of the window's ``from`` day (start time) to the
end of its ``to`` day, which the answer includes, or now when that is sooner (time): "the total
since from", which is what the answer says. Gauges are stamped at that same time. The stack's
hourly export (service/insights_export.py) passes ``since`` instead: its counts are totals from
a fixed day, stamped now. A null figure
(nothing to divide, no run to take a percentile of) is left out, never sent as 0.

The protobuf is written by the small encoder below (the wire format of opentelemetry-proto's
messages, field numbers from its .proto files) rather than with the ``opentelemetry-proto``
package: that package needs ``protobuf`` (3.3 MB installed, about 30 ms to import warm, measured
for 1.45.2 / 7.36.2) in every Lambda of the package, for a few hundred bytes a run. The tests
decode every request with the official classes (requirements-dev.txt), so the encoder cannot
drift from the schema unseen.

Header values (``STAGETRACK_OTLP_HEADERS``: a collector's API key) are registered as secrets
with the log scrubber and never logged; only their names are.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import struct
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from .. import logging_setup
from ..settings import Settings

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-protobuf"
SCOPE_NAME = "stagetrack.insights"
MAX_RESPONSE_BYTES = 64 * 1024
CUMULATIVE = 2  # opentelemetry.proto.metrics.v1.AggregationTemporality

# ---- protobuf wire format: just what the OTLP metrics messages need ----------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _string(number: int, text: str) -> bytes:
    return _bytes_field(number, text.encode("utf-8"))


def _fixed64(number: int, value: int) -> bytes:
    return _tag(number, 1) + struct.pack("<Q", value)


def _double(number: int, value: float) -> bytes:
    return _tag(number, 1) + struct.pack("<d", value)


def _uint(number: int, value: int) -> bytes:
    return _tag(number, 0) + _varint(value)


def _any_value(value: str | bool | int | float) -> bytes:
    if isinstance(value, bool):
        return _uint(2, int(value))
    if isinstance(value, int):
        return _uint(3, value)
    if isinstance(value, float):
        return _double(4, value)
    return _string(1, value)


def _key_value(number: int, key: str, value: str | bool | int | float) -> bytes:
    return _bytes_field(number, _string(1, key) + _bytes_field(2, _any_value(value)))


def _attributes(number: int, attributes: Mapping[str, str | bool | int | float]) -> bytes:
    return b"".join(_key_value(number, k, v) for k, v in attributes.items())


# ---- the metrics of one answer ------------------------------------------------------------------

Attributes = dict[str, str | bool | int | float]


@dataclass(frozen=True)
class Point:
    attributes: Attributes
    value: float


@dataclass(frozen=True)
class Metric:
    """One OTLP metric: ``kind`` is gauge, sum (monotonic, cumulative) or histogram (count only)."""
    name: str
    unit: str
    description: str
    kind: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Window:
    start_ns: int
    end_ns: int


# The answer's run outcomes as the conventions' cicd.pipeline.result values.
RESULTS = (("success", "success"), ("failure", "failure"), ("cancelled", "cancellation"), ("timedOut",
                                                                                           "timeout"))
ERRORS = (("failure", "failure"), ("timedOut", "timeout"))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _dig(value: object, *keys: str) -> object:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def parse_instant(value: object) -> datetime:
    """An ISO-8601 instant of the answer; a date alone is its midnight UTC; no zone means UTC."""
    if not isinstance(value, str):
        raise ValueError(f"not an ISO-8601 instant: {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def window_of(answer: Mapping[str, Any], now: datetime | None = None) -> Window:
    """From the start of ``from`` to the end of ``to``: a day alone (the route's UTC days, ``to``
    included) ends at the next midnight, an instant where it is; never later than ``now``, and
    never before the start (a point's time must not precede its start time)."""
    start = parse_instant(answer.get("from"))
    end = parse_instant(answer.get("to"))
    if isinstance(answer.get("to"), str) and len(answer["to"]) == 10:
        end += timedelta(days=1)
    end = min(end, now or datetime.now(UTC))
    return Window(_ns(start), max(_ns(end), _ns(start) + 1))


def insights_metrics(answer: Mapping[str, Any], pipeline: str | None = None) -> list[Metric]:
    """The metrics of one answer. ``pipeline`` is the answer's pipeline (the answer does not
    name it): it becomes ``cicd.pipeline.name`` on every point; an answer over several
    pipelines (``None``) is sent without it."""
    base: Attributes = {"cicd.pipeline.name": pipeline} if pipeline else {}
    metrics: list[Metric] = []

    def gauge(name: str, unit: str, description: str, points: Iterable[tuple[Attributes, object]]) -> None:
        kept = tuple(Point(attrs, v) for attrs, raw in points if (v := _number(raw)) is not None)
        if kept:
            metrics.append(Metric(name, unit, description, "gauge", kept))

    def counted(name: str, unit: str, description: str, kind: str,
                points: Iterable[tuple[Attributes, object]]) -> None:
        kept = tuple(Point(attrs, v) for attrs, raw in points if (v := _number(raw)) is not None and v > 0)
        if kept:
            metrics.append(Metric(name, unit, description, kind, kept))

    runs: dict = answer["runs"] if isinstance(answer.get("runs"), dict) else {}
    counted("cicd.pipeline.run.duration", "s",
            "Duration of a pipeline run grouped by pipeline, state and result (stagetrack: the count of "
            "finished runs per result in the window; percentiles in stagetrack.pipeline.run.duration.*)",
            "histogram",
            [({**base, "cicd.pipeline.run.state": "executing", "cicd.pipeline.result": result,
               **({"error.type": result} if result in ("failure", "timeout") else {})}, runs.get(key))
             for key, result in RESULTS])
    counted("cicd.pipeline.run.errors", "{error}",
            "The number of errors encountered in pipeline runs: failed and timed-out runs", "sum",
            [({**base, "error.type": kind}, runs.get(key)) for key, kind in ERRORS])
    for stat in ("p50", "p90", "p95", "mean"):
        gauge(f"stagetrack.pipeline.run.duration.{stat}", "s", f"Run duration {stat} of finished runs",
              [(base, _dig(answer, "duration", stat))])
    for stat in ("p50", "p95"):
        gauge(f"stagetrack.pipeline.run.queue.{stat}", "s", f"Queue time {stat}: ready to started",
              [(base, _dig(answer, "queue", stat))])
    gauge("stagetrack.pipeline.run.success_rate", "1", "success / (total - cancelled)",
          [(base, answer.get("successRate"))])
    gauge("stagetrack.pipeline.mttr", "s", "Mean time from a failure to the next success of the pipeline",
          [(base, answer.get("mttrSeconds"))])

    stages = [s for s in answer.get("stages") or [] if isinstance(s, dict) and isinstance(s.get("name"), str)]

    def per_stage(key: Callable[[dict], object]) -> list[tuple[Attributes, object]]:
        return [({**base, "cicd.pipeline.task.name": s["name"]}, key(s)) for s in stages]

    counted("stagetrack.pipeline.task.runs", "{run}", "Finished runs of the stage in the window", "sum",
            per_stage(lambda s: s.get("runs")))
    counted("stagetrack.pipeline.task.retries", "{retry}", "Retries of the stage in the window", "sum",
            per_stage(lambda s: s.get("retries")))
    gauge("stagetrack.pipeline.task.success_rate", "1", "The stage's success rate",
          per_stage(lambda s: s.get("successRate")))
    gauge("stagetrack.pipeline.task.flaky_rate", "1",
          "Share of the stage's runs that failed, then passed on a retry",
          per_stage(lambda s: s.get("flakyRate")))
    for stat in ("p50", "p95"):
        gauge(f"stagetrack.pipeline.task.duration.{stat}", "s", f"The stage's duration {stat}",
              per_stage(_stage_duration(stat)))

    dora: dict = answer["dora"] if isinstance(answer.get("dora"), dict) else {}
    gauge("stagetrack.dora.deployment_frequency", "{deployment}/d", "DORA: deployments per day",
          [(base, dora.get("deploymentFrequency"))])
    gauge("stagetrack.dora.lead_time.p50", "s", "DORA: commit to deployed, p50",
          [(base, _dig(dora, "leadTimeSeconds", "p50"))])
    gauge("stagetrack.dora.change_failure_rate", "1", "DORA: share of deployments followed by a failure",
          [(base, dora.get("changeFailureRate"))])
    gauge("stagetrack.dora.time_to_restore.p50", "s", "DORA: a failed deployment to the next success, p50",
          [(base, _dig(dora, "timeToRestoreSeconds", "p50"))])
    return metrics


def _stage_duration(stat: str) -> Callable[[dict], object]:
    return lambda stage: _dig(stage, "duration", stat)


def _data_point(metric: Metric, point: Point, window: Window) -> bytes:
    if metric.kind == "histogram":  # HistogramDataPoint: no bounds, one bucket holding the count
        count = int(point.value)
        return (_attributes(9, point.attributes) + _fixed64(2, window.start_ns) + _fixed64(3, window.end_ns)
                + _fixed64(4, count) + _bytes_field(6, struct.pack("<Q", count)))
    start = _fixed64(2, window.start_ns) if metric.kind == "sum" else b""
    return _attributes(7, point.attributes) + start + _fixed64(3, window.end_ns) + _double(4, point.value)


def _metric(metric: Metric, window: Window) -> bytes:
    points = b"".join(_bytes_field(1, _data_point(metric, p, window)) for p in metric.points)
    if metric.kind == "gauge":
        data = _bytes_field(5, points)
    elif metric.kind == "sum":
        data = _bytes_field(7, points + _uint(2, CUMULATIVE) + _uint(3, 1))
    else:
        data = _bytes_field(9, points + _uint(2, CUMULATIVE))
    return _string(1, metric.name) + _string(2, metric.description) + _string(3, metric.unit) + data


def encode_request(metrics: Sequence[Metric], window: Window, resource: Mapping[str, str],
                   scope_version: str = "1") -> bytes:
    """An ``ExportMetricsServiceRequest``: one resource, one scope, the metrics."""
    scope = _string(1, SCOPE_NAME) + _string(2, scope_version)
    scope_metrics = _bytes_field(1, scope) + b"".join(_bytes_field(2, _metric(m, window)) for m in metrics)
    resource_metrics = _bytes_field(1, _attributes(1, resource)) + _bytes_field(2, scope_metrics)
    return _bytes_field(1, resource_metrics)


# ---- configuration and the POST ------------------------------------------------------------------

class OtlpConfigError(ValueError):
    """A setting of the exporter is unusable (the message never holds a header's value)."""


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout_seconds: float = 10.0
    service_name: str = "stagetrack"

    def __repr__(self) -> str:  # never a header's value, even in a traceback's locals
        return f"OtlpConfig(endpoint={self.endpoint!r}, headers={sorted(self.headers)!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OtlpConfig | None:
        """``STAGETRACK_OTLP_ENDPOINT`` (the metrics URL, used as is, e.g.
        ``https://collector.example.com:4318/v1/metrics``), ``STAGETRACK_OTLP_HEADERS``
        (``name=value,name=value``, values percent-decoded, as ``OTEL_EXPORTER_OTLP_HEADERS``),
        ``STAGETRACK_OTLP_TIMEOUT_SECONDS`` (default 10). None when no endpoint is set."""
        env = os.environ if env is None else env
        endpoint = (env.get("STAGETRACK_OTLP_ENDPOINT") or "").strip()
        if not endpoint:
            return None
        headers = parse_headers(env.get("STAGETRACK_OTLP_HEADERS") or "")
        raw_timeout = env.get("STAGETRACK_OTLP_TIMEOUT_SECONDS") or "10"
        try:
            timeout = float(raw_timeout)
        except ValueError:
            timeout = -1.0
        if not 0.1 <= timeout <= 60:
            raise OtlpConfigError("STAGETRACK_OTLP_TIMEOUT_SECONDS must be 0.1 to 60, "
                                  f"got {raw_timeout[:20]!r}")
        check_endpoint(endpoint, bool(headers))
        for value in headers.values():
            logging_setup.add_secret(value)
        return cls(endpoint, headers, timeout, env.get("OTEL_SERVICE_NAME") or "stagetrack")

    @classmethod
    def from_settings(cls, settings: Settings, env: Mapping[str, str] | None = None) -> OtlpConfig | None:
        """The stack's export: the endpoint and headers of the settings (the headers from the
        operator's secret, field ``otlp_headers``), the timeout and service name from ``env``."""
        env = os.environ if env is None else env
        return cls.from_env({**{k: v for k, v in env.items() if k in ("STAGETRACK_OTLP_TIMEOUT_SECONDS",
                                                                       "OTEL_SERVICE_NAME")},
                             "STAGETRACK_OTLP_ENDPOINT": settings.otlp_endpoint or "",
                             "STAGETRACK_OTLP_HEADERS": settings.otlp_headers})


def parse_headers(raw: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), unquote(value.strip())
        if not sep or not _HEADER_NAME.fullmatch(name):
            raise OtlpConfigError("STAGETRACK_OTLP_HEADERS: expected name=value pairs; "
                                  f"bad name {name[:40]!r}")
        if not value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise OtlpConfigError(f"STAGETRACK_OTLP_HEADERS: the value of {name} is empty "
                                  "or has control characters")
        if name.lower() in ("content-type", "content-length", "host"):
            raise OtlpConfigError(f"STAGETRACK_OTLP_HEADERS: {name} is set by the exporter")
        headers[name] = value
    return headers


def check_endpoint(endpoint: str, has_headers: bool) -> None:
    """http(s) with a host, no credentials in the URL; plain http only to a loopback collector
    when headers are set (they are credentials: never across a network in clear)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise OtlpConfigError("STAGETRACK_OTLP_ENDPOINT must be an http(s) URL with a host and no "
                              "user:password (put credentials in STAGETRACK_OTLP_HEADERS)")
    if parts.scheme == "http" and has_headers and not _loopback(parts.hostname):
        raise OtlpConfigError("STAGETRACK_OTLP_ENDPOINT is http:// and STAGETRACK_OTLP_HEADERS is set: "
                              "headers would cross the network in clear; use https:// (http is for a "
                              "loopback collector)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ExportResult:
    status: int | None
    error: str | None
    metrics: int
    points: int
    bytes_sent: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def reached(self) -> bool:
        return self.status is not None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # a redirect would carry the headers
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


class OtlpExporter:
    """``export(answer, pipeline)``: one POST of the answer's metrics; an ExportResult, never an
    exception for a refused or failed POST (a schedule logs it and tries again next time)."""

    def __init__(self, config: OtlpConfig, opener: urllib.request.OpenerDirector | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.opener = opener or _OPENER
        self.clock = clock

    def export(self, answer: Mapping[str, Any], pipeline: str | None = None,
               since: datetime | None = None) -> ExportResult:
        """``since``: the start time of the cumulative points, which are stamped now (the stack's
        export: counts since a fixed day); None: the answer's window (``window_of``)."""
        now = self.clock()
        window = (window_of(answer, now) if since is None
                  else Window(_ns(since), max(_ns(now), _ns(since) + 1)))
        metrics = insights_metrics(answer, pipeline)
        body = encode_request(metrics, window, {"service.name": self.config.service_name})
        points = sum(len(m.points) for m in metrics)
        request = urllib.request.Request(self.config.endpoint, data=body, method="POST", headers={
            **self.config.headers, "Content-Type": CONTENT_TYPE, "User-Agent": "stagetrack-otlp/1"})
        status: int | None = None
        error: str | None = None
        try:
            with self.opener.open(request, timeout=self.config.timeout_seconds) as response:
                status = response.status
                response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as e:
            with e:
                status, error = e.code, f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            error = type(getattr(e, "reason", e)).__name__
        result = ExportResult(status, error, len(metrics), points, len(body))
        log.info("otlp export", extra={"fields": {"otlp": {
            "endpoint": self.config.endpoint, "headers": sorted(self.config.headers), "pipeline": pipeline,
            "status": status, "error": error, "metrics": result.metrics, "points": points,
            "bytes": len(body)}}})
        return result


# ---- export once: `python -m chalicelib.adapters.otlp` -------------------------------------------

Fetch = Callable[[str, Mapping[str, str]], Any]


def export_once(fetch: Fetch, exporter: OtlpExporter, pipelines: Sequence[str], window: tuple[str, str]
                ) -> list[tuple[str, ExportResult]]:
    """One insights answer per pipeline (``fetch(path, query)``: the decoded JSON of a GET of the
    public API), each exported. No pipeline given: every pipeline the token sees."""
    names = list(pipelines)
    if not names:
        cursor: str | None = None
        while True:
            page = fetch("/api/pipelines", {"runs": "0", "limit": "100",
                                            **({"cursor": cursor} if cursor else {})})
            names += [str(item["name"]) for item in page["items"]]
            cursor = page.get("nextCursor")
            if not cursor:
                break
    results = []
    for name in names:
        answer = fetch("/api/insights", {"pipeline": name, "from": window[0], "to": window[1],
                                         "granularity": "day"})
        results.append((name, exporter.export(answer, name)))
    return results


def today_so_far(now: datetime) -> tuple[str, str]:
    """The default window: this UTC day (from = to = today; the answer is the day so far), so the
    cumulative counts of successive exports grow through the day and start again at midnight
    (a new start time)."""
    today = now.astimezone(UTC).date().isoformat()
    return today, today


def _http_fetch(base_url: str, token: str) -> Fetch:
    def fetch(path: str, query: Mapping[str, str]) -> Any:
        url = base_url.rstrip("/") + quote(path) + ("?" + urlencode(query) if query else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}",
                                                       "Accept": "application/json"})
        with _OPENER.open(request, timeout=30) as response:
            return json.loads(response.read(16 * 1024 * 1024))
    return fetch


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Export once: the insights of today so far (or --from/--to, UTC days) for each pipeline, read from the
    API at STAGETRACK_URL with STAGETRACK_TOKEN (a read token), to STAGETRACK_OTLP_ENDPOINT.
    Exit 0 when every POST was accepted, 1 when one failed, 2 for a configuration error."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="python -m chalicelib.adapters.otlp", description=main.__doc__)
    parser.add_argument("--pipeline", action="append", default=[], help="a pipeline (repeat; default: all)")
    parser.add_argument("--from", dest="date_from", metavar="DAY", help="first day (default: today, UTC)")
    parser.add_argument("--to", dest="date_to", metavar="DAY", help="last day, included (default: today)")
    args = parser.parse_args(argv)
    try:
        config = OtlpConfig.from_env(env)
    except OtlpConfigError as e:
        sys.stderr.write(f"otlp: {e}\n")
        return 2
    url, token = env.get("STAGETRACK_URL"), env.get("STAGETRACK_TOKEN")
    if config is None or not url or not token:
        sys.stderr.write("otlp: set STAGETRACK_OTLP_ENDPOINT, STAGETRACK_URL and STAGETRACK_TOKEN\n")
        return 2
    logging_setup.configure()  # one scrubbed JSON line per POST, as in the service
    window = today_so_far(datetime.now(UTC))
    window = (args.date_from or window[0], args.date_to or window[1])
    try:
        results = export_once(_http_fetch(url, token), OtlpExporter(config), args.pipeline, window)
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as e:
        sys.stderr.write(f"otlp: reading the insights from {url} failed: {type(e).__name__} {str(e)[:200]}\n")
        return 1
    for name, result in results:
        sys.stdout.write(f"{name}: {result.status or result.error} ({result.metrics} metrics, "
                         f"{result.points} points, {result.bytes_sent} bytes)\n")
    return 0 if all(r.ok for _, r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
