"""The examples in README.md and docs/*.md run, as written, against a stack started as `make run`
starts it (chalice local over DynamoDB Local, with the local ticker and outbox threads), so they
cannot drift from the code.

Conventions (docs/index.md, "Examples in these pages"):

- Every ```sh block runs. A file's blocks run in order, in one `bash` with `set -euo pipefail`,
  in a fresh working directory, with `ST` set to the server's URL (the blocks say
  `ST=${ST:-http://127.0.0.1:8000}`). curl gets a bounded `--max-time` from a .curlrc.
- A line `#> expected` after a command checks the output of the commands since the previous
  check (or the start of the file): expected JSON (an object or array) must be a subset of the
  last JSON value printed (objects: the keys shown, recursively; arrays: same length, item by
  item); anything else must be a prefix of the output. In both, `…` stands for any text.
  Consecutive `#>` lines are one expectation.
- A block that cannot run locally (AWS, deploy, the `make` commands themselves) is fenced as
  ```{.sh .no-run}; they are listed in NO_RUN below, so new ones are a visible decision.
- Any other shell-like fence (bash, shell, console) is refused: it would silently not run.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))

FENCE = re.compile(r"^(`{3,})\s*(.*?)\s*$")
RUN_INFO = "sh"
NO_RUN_INFO = "{.sh .no-run}"
SHELL_LIKE = re.compile(r"(^|[^a-z])(sh|bash|shell|console|zsh)([^a-z]|$)")

# Every block that is not executed, by file and its first line: AWS and deploy commands, and the
# `make` commands themselves (the suite is what `make test` runs).
NO_RUN = {
    (
        "README.md",
        "make run    # DynamoDB Local (data kept in .data/) + tables + API on http://127.0.0.1:8000",
    ),
    ("docs/cli.md", "pip install .     # the `stagetrack` console script (stagetrack_cli/, pyproject.toml)"),
    ("docs/insights.md", "make insights-rebuild          # or: python -m tools.rebuild_insights"),
    ("docs/otel.md", "STAGETRACK_URL=https://ci.example.com/api STAGETRACK_TOKEN=$READ_TOKEN \\"),
    ("docs/deploy.md", "export AWS_DEFAULT_REGION=eu-west-1"),
    ("docs/runbook.md", "TOPIC=$(aws cloudformation describe-stacks --stack-name stagetrack \\"),
    (
        "docs/deploy.md",
        ".venv/bin/python -m infra.generate --check # infra/ and .chalice/policy-*.json are current",
    ),
    ("docs/deploy.md", "ST=$(aws cloudformation describe-stacks --stack-name stagetrack \\"),
    ("docs/deploy.md", "aws secretsmanager create-secret --name stagetrack/otlp-headers \\"),
    ("docs/integrations.md", "QUEUE=$(aws cloudformation describe-stacks --stack-name stagetrack \\"),
    (
        "docs/security.md",
        'aws apigateway update-stage --rest-api-id "$API_ID" --stage-name api --patch-operations \\',
    ),
}

FILE_TIMEOUT_SECONDS = 120  # one file's blocks, whatever they wait for
CURL_MAX_TIME_SECONDS = 20


@dataclass
class Block:
    file: str
    line: int  # of the opening fence, 1-based
    info: str
    lines: list[str]


@dataclass
class Expectation:
    segment: int  # the output it checks: out_dir/<segment>.out
    place: str  # file:line of its first `#>` line
    text: list[str] = field(default_factory=list)
    open: bool = True  # more `#>` lines may follow


def blocks_of(name: str) -> list[Block]:
    found, current, fence = [], None, ""
    for number, line in enumerate((ROOT / name).read_text().splitlines(), 1):
        if current is None:
            m = FENCE.match(line)
            if m:
                fence, current = m.group(1), Block(name, number, m.group(2), [])
        elif line.strip() == fence:
            found.append(current)
            current = None
        else:
            current.lines.append(line)
    assert current is None, f"{name}: unclosed code fence opened on line {current.line}"
    return found


def build_script(blocks: list[Block], out_dir: Path) -> tuple[str, dict[int, str], list[Expectation]]:
    """One bash script for a file's runnable blocks: output goes to out_dir/<segment>.out, a new
    segment starting after each `#>` check. Returns (script, script line -> doc place, checks)."""
    header = ["set -euo pipefail",
              'trap \'echo "failed: script line $LINENO, exit $?" >&2\' ERR',
              f'exec >"{out_dir}/0.out"']
    script, origin, checks = list(header), {}, []
    segment = 0

    def close_check():
        nonlocal segment
        if checks and checks[-1].open:
            checks[-1].open = False
            segment += 1  # the next commands write a new segment
            script.append(f'exec >"{out_dir}/{segment}.out"')

    for block in blocks:
        previous = ""
        for offset, line in enumerate(block.lines, 1):
            place = f"{block.file}:{block.line + offset}"
            if line.lstrip().startswith("#>"):
                assert not previous.rstrip().endswith("\\"), f"{place}: a check inside a continued command"
                text = line.lstrip()[2:]
                text = text[1:] if text.startswith(" ") else text
                if checks and checks[-1].open:
                    checks[-1].text.append(text)
                else:
                    checks.append(Expectation(segment, place, [text]))
                continue
            close_check()
            script.append(line)
            origin[len(script)] = place
            previous = line
        close_check()
    return "\n".join(script) + "\n", origin, checks


def _pattern(expected: str) -> re.Pattern:
    return re.compile(".*?".join(re.escape(part) for part in expected.split("…")), re.DOTALL)


def json_values(text: str) -> list:
    decoder, values, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            nl = text.find("\n", i)  # a line that is not JSON (headers, echo): skip it
            if nl < 0:
                break
            i = nl + 1
            continue
        values.append(value)
    return values


def subset(expected, actual) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and subset(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(expected) == len(actual)
                and all(subset(e, a) for e, a in zip(expected, actual, strict=True)))
    if isinstance(expected, str) and "…" in expected:
        return isinstance(actual, str) and _pattern(expected).fullmatch(actual) is not None
    return type(expected) is type(actual) and expected == actual


def check(expectation: Expectation, output: str) -> str | None:
    """None if the output meets the expectation, else why not. Lines before the first one that
    starts with { or [ are text (a prefix: status line and headers of `curl -i`), the rest JSON."""
    lines = expectation.text
    first_json = next((i for i, line in enumerate(lines) if line.lstrip()[:1] in ("{", "[")), len(lines))
    text, json_text = "\n".join(lines[:first_json]), " ".join(lines[first_json:])
    if text and not _pattern(text).match(output):
        return f"expected output starting with {text!r}\n  got: {output[-2000:]!r}"
    if json_text:
        try:
            expected = json.loads(json_text)
        except json.JSONDecodeError as e:
            return f"the expected JSON does not parse ({e}): {json_text}"
        values = json_values(output)
        if not (values and subset(expected, values[-1])):
            return f"expected JSON containing {json.dumps(expected)}\n  got: {output[-2000:]!r}"
    return None


RUNNABLE = [name for name in FILES if any(b.info == RUN_INFO for b in blocks_of(name))]


# ---- the checker checks itself (fast, no stack) ----

def test_check_convention():
    ok = Expectation(0, "t", ['{"status": "IN_PROGRESS", "stages": [{"id": "web:1:…"}]}'])
    assert check(ok, '{"x":1}{"status":"IN_PROGRESS","stages":[{"id":"web:1:1","n":2}],"v":1}') is None
    assert check(ok, '{"status":"IN_PROGRESS","stages":[{"id":"web:1:1"},{"id":"web:1:2"}]}') is not None
    assert check(ok, '{"status":"SUCCESS","stages":[{"id":"web:1:1"}]}') is not None
    assert check(Expectation(0, "t", ['{"n": 1}']), '{"n": true}') is not None
    assert check(Expectation(0, "t", ["HTTP/1.1 404"]), "HTTP/1.1 404 NOT FOUND\r\n") is None
    assert check(Expectation(0, "t", ["web:…"]), "shop:1\n") is not None
    headers_and_body = 'HTTP/1.1 201 Created\r\nLocation: /api/runs/w:1\r\n\r\n{"a": 1}'
    assert (
        check(Expectation(0, "t", ["HTTP/1.1 201…Location: /api/runs/w:1", '{"a":', " 1}"]), headers_and_body)
        is None
    )
    assert check(Expectation(0, "t", ["HTTP/1.1 200", '{"a": 1}']), headers_and_body) is not None
    assert check(Expectation(0, "t", ["HTTP/1.1 201", '{"a": 2}']), headers_and_body) is not None


def test_fences_are_run_or_listed():
    """Every shell block either runs or is one of the few listed no-run blocks."""
    no_run = set()
    for name in FILES:
        for block in blocks_of(name):
            if block.info == NO_RUN_INFO:
                no_run.add((name, block.lines[0]))
            else:
                assert block.info == RUN_INFO or not SHELL_LIKE.search(block.info), (
                    f"{name}:{block.line}: fence {block.info!r}: use sh (run by this test) or {NO_RUN_INFO}")
    assert no_run == NO_RUN


def test_every_page_has_examples_or_none_by_choice():
    assert {"README.md", "docs/api.md", "docs/cli.md", "docs/operations.md", "docs/dialects.md",
            "docs/integrations.md", "docs/security.md"} <= set(RUNNABLE)


# ---- the examples, against one stack ----

@pytest.fixture(scope="module")
def docs_stack(start_chalice_local):
    """The stack as `make run` has it: the documented local admin token, the ticker and the local
    outbox (so timers fire and webhook subscriptions deliver), loopback subscribers allowed as the
    subscription example needs; its own table, so the examples start from an empty database."""
    with start_chalice_local(STAGETRACK_TABLE=f"docs-{uuid.uuid4().hex[:12]}", STAGETRACK_ADMIN_TOKEN=None,
                             STAGETRACK_LOCAL_TICKER="1",
                             STAGETRACK_ALLOW_LOCAL_SUBSCRIBERS="1") as (base, log_path):
        yield base, log_path


@pytest.fixture(scope="module")
def cli_on_path(tmp_path_factory):
    """The `stagetrack` CLI as `pip install .` installs it (docs/cli.md): (its bin folder, the
    folder to put on PYTHONPATH)."""
    from tests.fixtures.cli import install_cli

    target = tmp_path_factory.mktemp("docs-cli")
    return install_cli(target, tmp_path_factory.mktemp("docs-cli-build")).parent, target


@pytest.mark.ddb_local
def test_examples_run_as_written(docs_stack, cli_on_path, tmp_path):
    """Every page's examples, README first, one page after the other on one stack (pages may use
    the same pipelines; none expects another page to have run)."""
    base, log_path = docs_stack
    problems = []
    for name in RUNNABLE:
        problems += run_page(name, base, tmp_path / name.replace("/", "_"), cli_on_path)
    assert not problems, "\n".join(problems) + f"\n(server log: {log_path})"


def run_page(name: str, base: str, tmp_path: Path, cli: tuple[Path, Path] | None = None) -> list[str]:
    """Runs a page's sh blocks in one bash; the problems found, each with its place. ``cli``: the
    installed `stagetrack` CLI (bin folder, its PYTHONPATH), put on PATH. HOME is the page's own
    folder, so nothing an example writes there (`stagetrack login`) reaches the real one."""
    out_dir, work = tmp_path / "out", tmp_path / "work"
    out_dir.mkdir(parents=True)
    work.mkdir()
    (tmp_path / ".curlrc").write_text(f"max-time = {CURL_MAX_TIME_SECONDS}\n")
    script, origin, checks = build_script([b for b in blocks_of(name) if b.info == RUN_INFO], out_dir)
    if not checks:
        return [f"{name}: runs examples but shows (#>) none of their output"]
    (tmp_path / "script.sh").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGETRACK_")}
    env.update({"ST": base, "CURL_HOME": str(tmp_path), "RECEIVER_PORT": str(_free_port()),
                "HOME": str(tmp_path)})
    env.pop("XDG_CONFIG_HOME", None)
    if cli:
        env.update({"PATH": f"{cli[0]}:{env.get('PATH', '')}", "PYTHONPATH": str(cli[1])})
    proc = subprocess.Popen(["bash", str(tmp_path / "script.sh")], cwd=work, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=FILE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        stderr = f"timed out after {FILE_TIMEOUT_SECONDS} s"
    finally:
        try:  # whatever the examples left running in the background (a receiver)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    if proc.returncode != 0:
        failed_line = re.search(r"failed: script line (\d+)", stderr or "")
        where = origin.get(int(failed_line.group(1)), "?") if failed_line else name
        return [f"{where}: the example failed:\n{stderr[-3000:]}"]
    problems = []
    for expectation in checks:
        out = out_dir / f"{expectation.segment}.out"
        reason = check(expectation, out.read_text() if out.exists() else "")
        if reason:
            problems.append(f"{expectation.place}: {reason}")
    return problems


def _free_port() -> int:
    from tools.dynamodb_local import free_port
    return free_port()


# ---- the site (`make docs`) ----

def build_site(config: Path, site: Path) -> subprocess.CompletedProcess:
    import sys
    # Not --quiet: it hides the warnings that --strict turns into a failure.
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], cwd=config.parent, capture_output=True, text=True,
                          timeout=120)


def test_site_builds_strict(tmp_path):
    """`make docs` in the suite: every page in nav, every link and anchor resolves, offline."""
    result = build_site(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name for p in (tmp_path / "site").glob("*.html")} >= {
        f"{Path(name).stem}.html" for name in FILES if name.startswith("docs/")}


def test_site_build_fails_on_a_broken_anchor(tmp_path):
    """The strictness the previous test relies on: a link to a missing anchor fails the build."""
    import shutil
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "index.md", "a") as f:
        f.write("\nSee [nothing](api.md#no-such-section).\n")
    result = build_site(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0 and "no-such-section" in result.stderr


def test_readme_is_short():
    """The README is the front door (what it is, quick start, walk-through, configuration, links);
    the reference belongs in docs/."""
    assert len((ROOT / "README.md").read_bytes()) < 12 * 1024


def test_readme_links_resolve():
    """README.md is not part of the site; its relative links are checked here."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert not missing
