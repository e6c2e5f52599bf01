"""The OTLP exporter's metrics and protobuf (chalicelib/adapters/otlp.py), decoded with the
official opentelemetry-proto classes: the hand-written encoder must give exactly the messages
the schema defines. The POST to a real receiver on 127.0.0.1 is
tests/integration/test_otlp_receiver.py."""
from __future__ import annotations

import io
import json
import logging
import re
from datetime import UTC, datetime

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from chalicelib import logging_setup
from chalicelib.adapters import otlp
from tests.fixtures.insights import empty, sample

FROM_NS = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) * 10**9
TO_NS = int(datetime(2026, 3, 4, tzinfo=UTC).timestamp()) * 10**9


LATER = datetime(2026, 6, 1, tzinfo=UTC)


def decode(answer: dict, pipeline: str | None = "web") -> dict:
    """The request for ``answer`` decoded by the official classes, as {metric name: metric}."""
    body = otlp.encode_request(otlp.insights_metrics(answer, pipeline), otlp.window_of(answer, LATER),
                               {"service.name": "stagetrack"})
    request = ExportMetricsServiceRequest.FromString(body)
    assert len(request.resource_metrics) == 1
    resource = request.resource_metrics[0]
    assert {a.key: a.value.string_value for a in resource.resource.attributes} == {
        "service.name": "stagetrack"}
    assert len(resource.scope_metrics) == 1
    scope = resource.scope_metrics[0]
    assert (scope.scope.name, scope.scope.version) == ("stagetrack.insights", "1")
    names = [m.name for m in scope.metrics]
    assert len(names) == len(set(names))  # one metric per name
    return {m.name: m for m in scope.metrics}


def attrs(point) -> dict:
    out = {}
    for a in point.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind)
    return out


def test_run_counts_are_the_semconv_duration_histogram_one_point_per_result():
    metric = decode(sample())["cicd.pipeline.run.duration"]
    assert (metric.unit, metric.WhichOneof("data")) == ("s", "histogram")
    cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    assert metric.histogram.aggregation_temporality == cumulative
    points = {attrs(p)["cicd.pipeline.result"]: p for p in metric.histogram.data_points}
    assert {k: p.count for k, p in points.items()} == {"success": 30, "failure": 6, "cancellation": 2,
                                                       "timeout": 2}
    for point in points.values():
        assert (point.start_time_unix_nano, point.time_unix_nano) == (FROM_NS, TO_NS)  # the window
        assert list(point.explicit_bounds) == [] and list(point.bucket_counts) == [point.count]
        assert not point.HasField("sum")  # the answer has no per-result sum: left out, not invented
    assert attrs(points["failure"]) == {"cicd.pipeline.name": "web", "cicd.pipeline.run.state": "executing",
                                        "cicd.pipeline.result": "failure", "error.type": "failure"}
    assert "error.type" not in attrs(points["success"])


def test_errors_are_a_monotonic_cumulative_sum_by_error_type():
    metric = decode(sample())["cicd.pipeline.run.errors"]
    assert metric.unit == "{error}" and metric.sum.is_monotonic
    assert metric.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    assert {attrs(p)["error.type"]: p.as_double for p in metric.sum.data_points} == {"failure": 6,
                                                                                     "timeout": 2}
    assert all(p.start_time_unix_nano == FROM_NS for p in metric.sum.data_points)


def test_every_figure_of_the_answer_is_a_gauge_or_a_sum():
    metrics = decode(sample())

    def value(name, **where):
        metric = metrics[name]
        points = metric.gauge.data_points if metric.WhichOneof("data") == "gauge" else metric.sum.data_points
        chosen = [p for p in points if all(attrs(p).get(k) == v for k, v in where.items())]
        assert len(chosen) == 1, (name, where)
        assert attrs(chosen[0])["cicd.pipeline.name"] == "web" and chosen[0].time_unix_nano == TO_NS
        return chosen[0].as_double

    assert [value(f"stagetrack.pipeline.run.duration.{s}") for s in ("p50", "p90", "p95", "mean")] == [
        250.0, 610.5, 742.0, 301.25]
    assert [value(f"stagetrack.pipeline.run.queue.{s}") for s in ("p50", "p95")] == [4.0, 95.0]
    assert value("stagetrack.pipeline.run.success_rate") == pytest.approx(30 / 38)
    assert value("stagetrack.pipeline.mttr") == 5400.0
    task = "cicd.pipeline.task.name"
    assert value("stagetrack.pipeline.task.duration.p95", **{task: "integration-tests"}) == 520.0
    assert value("stagetrack.pipeline.task.duration.p50", **{task: "build"}) == 80.0
    assert value("stagetrack.pipeline.task.flaky_rate", **{task: "integration-tests"}) == 0.125
    assert value("stagetrack.pipeline.task.success_rate", **{task: "deploy"}) == pytest.approx(0.9667,
                                                                                               abs=1e-4)
    assert value("stagetrack.pipeline.task.runs", **{task: "build"}) == 40
    assert value("stagetrack.pipeline.task.retries", **{task: "integration-tests"}) == 6
    assert metrics["stagetrack.pipeline.task.runs"].sum.is_monotonic
    assert value("stagetrack.dora.deployment_frequency") == 2.5
    assert metrics["stagetrack.dora.deployment_frequency"].unit == "{deployment}/d"
    assert value("stagetrack.dora.lead_time.p50") == 7200.0
    assert value("stagetrack.dora.change_failure_rate") == 0.1
    assert value("stagetrack.dora.time_to_restore.p50") == 3600.0
    assert {m.unit for n, m in metrics.items() if n.endswith(("rate", "success_rate"))} == {"1"}


def test_nulls_and_zero_counts_are_left_out_never_sent_as_zero():
    metrics = decode(empty())
    # no run: no count, no percentile, no rate; a deployment frequency of 0 is a figure, kept
    assert set(metrics) == {"stagetrack.dora.deployment_frequency"}
    assert metrics["stagetrack.dora.deployment_frequency"].gauge.data_points[0].as_double == 0.0


def test_an_answer_over_several_pipelines_has_no_pipeline_name():
    metrics = decode(sample(), pipeline=None)
    for metric in metrics.values():
        kind = metric.WhichOneof("data")
        for point in getattr(metric, kind).data_points:
            assert "cicd.pipeline.name" not in attrs(point)


def test_the_window_runs_from_the_first_day_to_the_end_of_the_last_or_now():
    answer = sample()  # 2026-03-01 .. 2026-03-03, the last day included
    assert otlp.window_of(answer, LATER) == otlp.Window(FROM_NS, TO_NS)
    during = datetime(2026, 3, 3, 9, 15, tzinfo=UTC)  # the last day is today: it ends now
    assert otlp.window_of(answer, during).end_ns == int(during.timestamp()) * 10**9
    answer["from"] = answer["to"] = "2026-03-03"
    window = otlp.window_of(answer, datetime(2026, 3, 3, tzinfo=UTC))
    assert window.end_ns == window.start_ns + 1  # a time never precedes its start time


def test_windows_and_attribute_values_are_encoded_exactly():
    answer = sample()
    answer["from"], answer["to"] = "2026-03-01", "2026-03-01T12:30:00.250+02:00"
    window = otlp.window_of(answer, LATER)
    assert window.start_ns == FROM_NS  # a date alone: its midnight UTC
    assert window.end_ns == int(datetime(2026, 3, 1, 10, 30, tzinfo=UTC).timestamp()) * 10**9 + 250_000_000
    answer["stages"][0]["name"] = "bauen ✓ \"quoted\""
    metrics = decode(answer, pipeline="ünïcode/pipe")
    point = metrics["stagetrack.pipeline.task.runs"].sum.data_points[0]
    assert attrs(point) == {"cicd.pipeline.name": "ünïcode/pipe",
                            "cicd.pipeline.task.name": "bauen ✓ \"quoted\""}


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32, 2**63 - 1, -1])
def test_varints_match_protobuf(value):
    from google.protobuf.internal.encoder import _VarintBytes

    assert otlp._varint(value) == _VarintBytes(value & (2**64 - 1))


# ---- configuration: headers are secrets ----

def test_config_from_env_parses_headers_and_never_shows_their_values():
    secret = "k3y-" + "s" * 30
    config = otlp.OtlpConfig.from_env({"STAGETRACK_OTLP_ENDPOINT": "https://otel.example.com/v1/metrics",
                                       "STAGETRACK_OTLP_HEADERS": f"api-key={secret}, x-tenant=team%20a"})
    assert config is not None and config.headers == {"api-key": secret, "x-tenant": "team a"}
    assert secret not in repr(config) and "api-key" in repr(config)
    assert logging_setup.redact(f"oops {secret}") == "oops [REDACTED]"  # registered with the scrubber
    assert otlp.OtlpConfig.from_env({}) is None  # no endpoint: no export


@pytest.mark.parametrize(("env", "message"), [
    ({"STAGETRACK_OTLP_ENDPOINT": "ftp://otel/v1/metrics"}, "http(s) URL"),
    ({"STAGETRACK_OTLP_ENDPOINT": "https://user:pw@otel/v1/metrics"}, "no user:password"),
    ({"STAGETRACK_OTLP_ENDPOINT": "http://otel.example.com/v1/metrics",
      "STAGETRACK_OTLP_HEADERS": "api-key=s3cr3t-value"}, "in clear"),
    ({"STAGETRACK_OTLP_ENDPOINT": "https://otel/v1/metrics", "STAGETRACK_OTLP_HEADERS": "novalue"},
     "name=value"),
    ({"STAGETRACK_OTLP_ENDPOINT": "https://otel/v1/metrics",
      "STAGETRACK_OTLP_HEADERS": "api-key=line%0Dbreak-s3cr3t"}, "control characters"),
    ({"STAGETRACK_OTLP_ENDPOINT": "https://otel/v1/metrics", "STAGETRACK_OTLP_HEADERS": "Host=evil"},
     "set by"),
    ({"STAGETRACK_OTLP_ENDPOINT": "https://otel/v1/metrics", "STAGETRACK_OTLP_TIMEOUT_SECONDS": "0"},
     "0.1 to 60"),
])
def test_config_errors_say_what_is_wrong_without_the_secret(env, message):
    with pytest.raises(otlp.OtlpConfigError, match=re.escape(message)) as raised:
        otlp.OtlpConfig.from_env(env)
    assert "s3cr3t" not in str(raised.value)


def test_plain_http_with_headers_is_fine_to_a_loopback_collector():
    for host in ("127.0.0.1:4318", "localhost:4318", "[::1]:4318"):
        config = otlp.OtlpConfig.from_env({"STAGETRACK_OTLP_ENDPOINT": f"http://{host}/v1/metrics",
                                           "STAGETRACK_OTLP_HEADERS": "api-key=abcdefgh"})
        assert config is not None


# ---- the POST, with an injected opener (the real socket test is in tests/integration) ----

class FakeResponse(io.BytesIO):
    status = 200


class FakeOpener:
    def __init__(self) -> None:
        self.requests = []

    def open(self, request, timeout):
        self.requests.append((request, timeout))
        return FakeResponse(b"")


def test_export_posts_protobuf_with_the_headers_and_logs_only_header_names(caplog):
    secret = "collector-key-" + "x" * 20
    config = otlp.OtlpConfig("https://otel.example.com/v1/metrics", {"api-key": secret}, 3.0)
    opener = FakeOpener()
    with caplog.at_level(logging.INFO, logger="chalicelib.adapters.otlp"):
        result = otlp.OtlpExporter(config, opener).export(sample(), "web")  # type: ignore[arg-type]
    assert result.ok and result.status == 200 and result.points > 20
    request, timeout = opener.requests[0]
    assert timeout == 3.0 and request.get_method() == "POST"
    assert request.full_url == "https://otel.example.com/v1/metrics"
    assert request.get_header("Content-type") == "application/x-protobuf"
    assert request.get_header("Api-key") == secret
    assert ExportMetricsServiceRequest.FromString(request.data).resource_metrics[0].scope_metrics[0].metrics
    record = next(r for r in caplog.records if r.getMessage() == "otlp export")
    assert record.fields["otlp"]["headers"] == ["api-key"]
    logged = logging_setup.JsonFormatter().format(record)
    assert secret not in logged and json.loads(logged)["otlp"]["status"] == 200


def test_export_once_reads_every_pipeline_page_then_each_answer():
    asked = []
    pages = {None: {"items": [{"name": "web"}], "nextCursor": "c2"}, "c2": {"items": [{"name": "api"}],
                                                                           "nextCursor": None}}

    def fetch(path, query):
        asked.append((path, dict(query)))
        return pages[query.get("cursor")] if path == "/api/pipelines" else sample()

    opener = FakeOpener()
    exporter = otlp.OtlpExporter(otlp.OtlpConfig("https://otel.example.com/v1/metrics"), opener)  # type: ignore[arg-type]
    results = otlp.export_once(fetch, exporter, [], ("2026-03-01", "2026-03-01"))
    assert [name for name, r in results if r.ok] == ["web", "api"]
    assert asked[2:] == [("/api/insights", {"pipeline": p, "from": "2026-03-01",
                                            "to": "2026-03-01",
                                            "granularity": "day"}) for p in ("web", "api")]
    assert asked[1] == ("/api/pipelines", {"runs": "0", "limit": "100", "cursor": "c2"})
    names = [attrs(p)["cicd.pipeline.name"] for r, _ in opener.requests
             for p in ExportMetricsServiceRequest.FromString(r.data).resource_metrics[0].scope_metrics[0]
             .metrics[0].histogram.data_points[:1]]
    assert names == ["web", "api"]


def test_the_default_window_is_today_so_far_in_utc():
    from datetime import timedelta, timezone

    now = datetime(2026, 3, 5, 1, 30, 5, tzinfo=UTC)
    assert otlp.today_so_far(now) == ("2026-03-05", "2026-03-05")
    west = now.astimezone(timezone(timedelta(hours=-5)))  # still 4 March there: the UTC day counts
    assert otlp.today_so_far(west) == ("2026-03-05", "2026-03-05")


def test_main_refuses_to_start_without_its_settings(capsys):
    assert otlp.main([], env={}) == 2
    assert "STAGETRACK_OTLP_ENDPOINT" in capsys.readouterr().err
    assert otlp.main([], env={"STAGETRACK_OTLP_ENDPOINT": "ftp://x"}) == 2
