"""Schemathesis against a real server, as `make run` serves it: DynamoDB Local + `chalice local`.

Fixed seed, bounded examples per operation, every operation in /openapi.json: no 500s, no
response outside the documented status codes, content types, headers and schemas, and
requests without credentials refused. Marked ddb_local: it runs in `make test` and fails
(never skips) if Java or DynamoDB Local is missing.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.ddb_local

ROOT = Path(__file__).resolve().parents[2]
SEED = 20260320
MAX_EXAMPLES = 10
STATEFUL_EXAMPLES = 10
STATEFUL_STEPS = 6
CHECKS_ON = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
             "response_headers_conformance", "response_schema_conformance", "ignored_auth",
             "negative_data_rejection", "use_after_free", "ensure_resource_availability"]
CHECKS_OFF = ["positive_data_acceptance", "missing_required_header", "unsupported_method",
              "allow_header_conformance", "object_level_authorization"]


def schemathesis_config() -> str:
    lines = []
    for name in CHECKS_ON + CHECKS_OFF:
        lines += [f"[checks.{name}]", f"enabled = {str(name in CHECKS_ON).lower()}"]
        if name == "negative_data_rejection":
            # A body over the size limit is refused with 413: a rejection too.
            lines.append("expected-statuses = [400, 401, 403, 404, 405, 409, 413, 415, 422, 429]")
    lines += [
        # No crash cache: every run starts from the seed alone, and writes nothing to the repo.
        "[cache]", "enabled = false",
        # chalice local's HTTP server answers TRACE with 501 itself (API Gateway refuses it
        # before the app); every other unexpected method must get a clean 405.
        "[phases.coverage]",
        'unexpected-methods = ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]',
        # Stateful: only the declared links (POST /api/runs -> operations on its ids), short.
        "[phases.stateful]", f"max-steps = {STATEFUL_STEPS}",
        "[phases.stateful.inference]", "algorithms = []",
        "[phases.stateful.generation]", f"max-examples = {STATEFUL_EXAMPLES}",
        # Dialect endpoints and webhooks speak other products' formats, which ignore fields they
        # do not know (as GoCD does): there an unknown field is no error to reject.
        "[[operations]]", 'include-path-regex = "^/(go/|v3/|workspaces/|api/webhooks/)"',
        "[operations.checks.negative_data_rejection]", "enabled = false",
    ]
    return "\n".join(lines) + "\n"


# The document in two parts, run at the same time against two servers (the test's two cores;
# one run took most of the e2e tier's time): the runs' part holds POST /api/runs and every
# operation its links lead to (runs, stages, pipelines), so the stateful phase follows them; the
# other part is the rest, which has no links, so no stateful phase. Together, every operation
# of the document, each exactly once (asserted below).
LINKED = r"^/api/(runs|stages|pipelines)(/|$)"
PARTS = {"runs-stages-pipelines": (LINKED, "examples,coverage,fuzzing,stateful"),
         "the-rest": (r"^/(?!api/(runs|stages|pipelines)(/|$))", "examples,coverage,fuzzing")}


def _part_operations(document: dict, pattern: str) -> int:
    methods = {"get", "put", "post", "delete", "patch", "options", "head"}
    return sum(len(methods & set(ops)) for path, ops in document["paths"].items() if re.match(pattern, path))


def _schemathesis(base: str, admin_token: str, part: str, workdir: Path) -> subprocess.Popen:
    pattern, phases = PARTS[part]
    workdir.mkdir()
    config = workdir / "schemathesis.toml"
    config.write_text(schemathesis_config())
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config),
        "run", f"{base}/openapi.json",
        "--header", f"Authorization: Bearer {admin_token}",
        "--include-path-regex", pattern,
        "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--no-shrink",
        "--phases", phases,
        "--workers", "1", "--request-timeout", "20", "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(workdir),
    ]
    return subprocess.Popen(command, cwd=str(workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})


def test_schemathesis_finds_no_server_error_and_no_schema_violation(chalice_local, start_chalice_local,
                                                                     tmp_path):
    import uuid

    base, admin_token, _ = chalice_local
    with start_chalice_local(STAGETRACK_ADMIN_TOKEN=admin_token,
                             STAGETRACK_TABLE=f"schemathesis-{uuid.uuid4().hex[:12]}") as (second, _):
        bases = {"runs-stages-pipelines": base, "the-rest": second}
        for url in bases.values():  # something to find: a run whose ids the generated requests may hit
            created = requests.post(f"{url}/api/runs", json={"pipeline": "web", "stages": ["BUILD"]},
                                    headers={"Authorization": f"Bearer {admin_token}"}, timeout=10)
            assert created.status_code == 201, created.text
        running = {part: _schemathesis(url, admin_token, part, tmp_path / part)
                   for part, url in bases.items()}
        outputs = {}
        for part, proc in running.items():
            try:
                out, _ = proc.communicate(timeout=900)
            finally:
                if proc.poll() is None:
                    proc.kill()
            outputs[part] = (proc.returncode, re.sub(r"(.)\1{40,}", r"\1\1\1[…]", out))  # long strings
        document = requests.get(f"{base}/openapi.json", timeout=10).json()
    everything = _part_operations(document, "^/")
    assert sum(_part_operations(document, pattern) for pattern, _ in PARTS.values()) == everything
    for part, (returncode, output) in outputs.items():
        assert admin_token not in output.replace("Bearer " + admin_token, "")  # only our own header
        assert returncode == 0, f"{part}: " + output[-20000:]
        # every operation of the part was selected and tested
        selected = re.search(r"Selected: (\d+)/(\d+)", output)
        tested = re.search(r"Tested: (\d+)", output)
        assert selected and tested, output[-3000:]
        assert int(selected.group(2)) >= everything - 1, output[-3000:]
        expected = _part_operations(document, PARTS[part][0])
        assert int(selected.group(1)) == int(tested.group(1)) >= expected - 1 > 0, output[-3000:]
