"""The OTLP exporter over real HTTP: a small OTLP/HTTP receiver on 127.0.0.1 (standard-library
server) that decodes each POST with the official opentelemetry-proto classes, as a collector's
otlphttp receiver does, plus what a collector may answer (refusal, redirect, nobody there)."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from chalicelib import logging_setup
from chalicelib.adapters import otlp
from tests.fixtures.insights import sample

SECRET = "otlp-api-key-" + "q" * 24


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        self.location: str | None = None


@pytest.fixture
def receiver() -> Iterator[tuple[str, Receiver]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append({"path": self.path, "headers": self.headers,
                                   "request": ExportMetricsServiceRequest.FromString(body)})
            self.send_response(state.status)
            if state.location:
                self.send_header("Location", state.location)
            answer = ExportMetricsServiceResponse().SerializeToString()
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def exporter(base: str) -> otlp.OtlpExporter:
    config = otlp.OtlpConfig.from_env({"STAGETRACK_OTLP_ENDPOINT": f"{base}/v1/metrics",
                                       "STAGETRACK_OTLP_HEADERS": f"api-key={SECRET}",
                                       "STAGETRACK_OTLP_TIMEOUT_SECONDS": "2"})
    assert config is not None
    return otlp.OtlpExporter(config)


def test_the_receiver_decodes_every_metric_of_an_answer(receiver, capsys):
    base, state = receiver
    logging_setup.configure()
    result = exporter(base).export(sample(), "web")
    assert result.ok and result.status == 200
    [got] = state.received
    assert got["path"] == "/v1/metrics"
    assert got["headers"].get("content-type") == "application/x-protobuf"
    assert got["headers"].get("api-key") == SECRET
    metrics = {m.name: m for m in got["request"].resource_metrics[0].scope_metrics[0].metrics}
    assert len(metrics) == result.metrics
    duration = metrics["cicd.pipeline.run.duration"]
    assert sum(p.count for p in duration.histogram.data_points) == sample()["runs"]["total"]
    assert metrics["stagetrack.pipeline.run.duration.p95"].gauge.data_points[0].as_double == 742.0
    logged = capsys.readouterr().out
    line = next(json.loads(x) for x in logged.splitlines() if '"otlp export"' in x)
    assert line["otlp"]["headers"] == ["api-key"] and line["otlp"]["status"] == 200
    assert SECRET not in logged  # the header's value is never logged


def test_a_refusal_is_a_failed_result_not_an_exception(receiver):
    base, state = receiver
    state.status = 503
    result = exporter(base).export(sample(), "web")
    assert (result.ok, result.reached, result.status, result.error) == (False, True, 503, "HTTP 503")


def test_a_redirect_is_not_followed_with_the_headers(receiver):
    base, state = receiver
    state.status, state.location = 307, "http://127.0.0.1:9/steal"
    result = exporter(base).export(sample(), "web")
    assert not result.ok and result.status == 307 and len(state.received) == 1


def test_nobody_listening_is_a_failed_result():
    import socket

    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = exporter(f"http://127.0.0.1:{port}").export(sample(), "web")
    assert not result.ok and not result.reached and result.status is None and result.error


def test_export_once_from_the_command_line(receiver, monkeypatch, capsys):
    """`python -m chalicelib.adapters.otlp --pipeline web` with the API read through a fake fetch
    (the real API is the dashboard's and the CLI's concern): one POST per pipeline, exit 0."""
    base, state = receiver
    asked = []

    def fake_http_fetch(url, token):
        assert (url, token) == ("http://127.0.0.1:8000", "st_read-token")
        return lambda path, query: asked.append((path, dict(query))) or sample()

    monkeypatch.setattr(otlp, "_http_fetch", fake_http_fetch)
    env = {"STAGETRACK_OTLP_ENDPOINT": f"{base}/v1/metrics", "STAGETRACK_URL": "http://127.0.0.1:8000",
           "STAGETRACK_TOKEN": "st_read-token"}
    assert otlp.main(["--pipeline", "web", "--from", "2026-03-01", "--to", "2026-03-04"], env=env) == 0
    assert asked == [("/api/insights", {"pipeline": "web", "from": "2026-03-01", "to": "2026-03-04",
                                        "granularity": "day"})]
    out = capsys.readouterr().out
    assert len(state.received) == 1 and "\nweb: 200 (20 metrics, 36 points, " in out
    assert '"message":"otlp export"' in out  # the command logs as the service does (JSON, scrubbed)
    state.status = 500
    assert otlp.main(["--pipeline", "web"], env=env) == 1


def test_the_exporter_runs_on_the_standard_library_alone():
    """`python -m chalicelib.adapters.otlp` from a checkout needs no installed package (docs/otel.md):
    imported by a Python without site-packages, it loads."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-S", "-c",
                             "import chalicelib.adapters.otlp as m; print(m.CONTENT_TYPE)"],
                            capture_output=True, text=True, cwd=root, timeout=60)
    assert (result.returncode, result.stdout) == (0, "application/x-protobuf\n"), result.stderr
