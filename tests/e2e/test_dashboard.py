"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright for Python,
against `chalice local` over DynamoDB Local as `make run` starts them.

A developer machine without /usr/bin/chromium skips these tests with a message saying how to get
it; under CI=true a missing browser fails them (.ci/run installs it first), so CI never skips.
Screenshots of the main pages are written to $STAGETRACK_SCREENSHOTS when it names a folder
(`STAGETRACK_SCREENSHOTS=docs/img make test-e2e` refreshes the ones in docs/dashboard.md).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests

CHROMIUM = Path("/usr/bin/chromium")
# The page polls every 2 s; an expectation waits for the change it looks for, up to this long.
WAIT_MS = 15_000


def _chromium_or_skip() -> None:
    if CHROMIUM.exists():
        return
    message = (f"the browser tests need Debian's chromium at {CHROMIUM}: "
               "`sudo apt-get install -y chromium` (Playwright's own download is not used)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true and " + message + "; .ci/run installs it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
              if msg.type == "error" and "401" not in msg.text else None)
    opened.problems = problems  # type: ignore[attr-defined]
    yield opened
    context.close()


@pytest.fixture
def stack(chalice_local):
    base, admin_token, _log = chalice_local
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {admin_token}"
    return base, admin_token, http


def _shot(page, name: str) -> None:
    folder = os.environ.get("STAGETRACK_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _sign_in(page, base: str, token: str) -> None:
    from playwright.sync_api import expect

    page.goto(base + "/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=WAIT_MS)
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=WAIT_MS)


def _run(http, base: str, pipeline: str) -> dict:
    created = http.post(f"{base}/api/runs", json={
        "pipeline": pipeline, "branch": "main", "sourceUrl": "https://ci.example.com/web/builds/1",
        "commit": {"hash": "9fceb02d0ae598e95dc970b74767f19372d61af8", "message": "Fix the login page",
                   "committedAt": "2026-03-20T17:00:00.000Z"},
        "stages": [{"type": "BUILD", "timeoutSeconds": 600},
                   {"type": "DEPLOY_PROD", "approval": "MANUAL"}],
        "variables": {"REGION": "eu-west-1"},
    })
    assert created.status_code == 201, created.text
    return created.json()


def _patch(http, base: str, stage_id: str, status: str) -> None:
    response = http.patch(f"{base}/api/stages/{stage_id}", json={"status": status})
    assert response.status_code == 200, response.text


def test_a_signed_out_visitor_sees_the_sign_in_page_never_a_403(stack, page):
    from playwright.sync_api import expect

    base, _token, _http = stack
    response = page.goto(base + "/")
    assert response is not None and response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    expect(page.get_by_label("Token")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    _shot(page, "sign-in")
    page.get_by_label("Token").fill("st_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is unknown or revoked.", timeout=WAIT_MS)
    assert page.problems == []  # no CSP violation, no script error


def test_sign_in_see_a_pipeline_open_a_run_watch_it_move_and_approve_a_gate(stack, page):
    from playwright.sync_api import expect

    base, token, http = stack
    run = _run(http, base, "dash-web")
    build, deploy = (s["id"] for s in run["stages"])
    _patch(http, base, build, "IN_PROGRESS")

    _sign_in(page, base, token)
    card = page.get_by_role("region", name="dash-web")
    expect(card).to_be_visible(timeout=WAIT_MS)
    expect(card.get_by_role("link", name=f"#{run['counter']}")).to_be_visible()
    _shot(page, "pipelines")

    card.get_by_role("link", name=f"#{run['counter']}").click()
    build_row = page.locator("#stages tr[data-stage='BUILD']")
    expect(build_row).to_contain_text("in progress", timeout=WAIT_MS)
    expect(page.locator("#gantt .g-bar.g-live")).to_have_count(1)
    expect(page.locator("#gantt .g-deadline")).to_have_count(1)  # BUILD's timeout, marked
    expect(page.get_by_text("Fix the login page")).to_be_visible()
    expect(page.locator("dl.meta a[href='https://ci.example.com/web/builds/1']")).to_have_count(1)
    expect(page.locator("dl.meta")).to_contain_text("bootstrap admin")  # the actor
    expect(page.locator("#stages tr[data-stage='BUILD']")).not_to_contain_text("needs approval")
    page.evaluate("window.__notReloaded = true")
    _shot(page, "run-running")

    _patch(http, base, build, "SUCCESS")  # elsewhere: the page sees it on its next poll
    expect(build_row).to_contain_text("success", timeout=WAIT_MS)
    expect(page.locator("#gantt .g-bar.g-live")).to_have_count(0)
    assert page.evaluate("window.__notReloaded") is True  # updated in place, not reloaded

    _patch(http, base, deploy, "IN_PROGRESS")  # a MANUAL gate: it waits for approval
    deploy_row = page.locator("#stages tr[data-stage='DEPLOY_PROD']")
    expect(deploy_row).to_contain_text("waiting for approval", timeout=WAIT_MS)

    page.get_by_role("link", name="Approvals").click()
    expect(page.get_by_role("button", name="Approve DEPLOY_PROD")).to_be_visible(timeout=WAIT_MS)
    _shot(page, "approvals")
    page.get_by_role("link", name=f"dash-web #{run['counter']}").click()

    deploy_row.get_by_role("button", name="Approve DEPLOY_PROD").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Comment (optional)").fill("ship it")
    dialog.get_by_role("button", name="Approve").click()
    expect(deploy_row).to_contain_text("in progress", timeout=WAIT_MS)
    expect(deploy_row).to_contain_text("approved by bootstrap admin")
    expect(deploy_row).to_contain_text("ship it")
    _shot(page, "run-approved")

    stage = http.get(f"{base}/api/stages/{deploy}").json()
    assert stage["status"] == "IN_PROGRESS"
    assert stage["approvalDecision"]["decision"] == "APPROVED"
    assert stage["approvalDecision"]["comment"] == "ship it"
    assert page.problems == []


def test_force_cancel_asks_in_its_own_dialog_and_skips_the_finally_stage(stack, page):
    from playwright.sync_api import expect

    base, token, http = stack
    created = http.post(f"{base}/api/runs", json={"pipeline": "dash-force", "stages": [
        {"type": "BUILD"}, {"type": "OTHER", "name": "cleanup", "always": True}]})
    assert created.status_code == 201, created.text
    run = created.json()
    _patch(http, base, run["stages"][0]["id"], "IN_PROGRESS")
    _sign_in(page, base, token)
    page.goto(f"{base}/#/runs/{run['id']}")
    page.get_by_role("button", name="Force cancel").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("stages marked always do NOT run")
    dialog.get_by_label("Reason (optional)").fill("runner lost")
    dialog.get_by_role("button", name="Force cancel").click()
    expect(page.locator("#stages tr[data-stage='cleanup']")).to_contain_text("skipped", timeout=WAIT_MS)
    expect(page.locator("dl.meta")).to_contain_text("Force-cancelled")
    after = http.get(f"{base}/api/runs/{run['id']}").json()
    assert after["status"] == "CANCELLED"
    assert [s["status"] for s in after["stages"]] == ["CANCELLED", "SKIPPED"]
    assert after["cancellation"]["force"] is True and after["cancellation"]["reason"] == "runner lost"
    assert page.problems == []


def test_a_stage_past_its_recent_p95_is_marked_overrunning_and_the_run_has_an_eta(
        stack, page, start_chalice_local):
    """docs/insights.md "Overruns and ETA" on a stack with the local ticker and outbox threads as
    `make run` has them: five quick BUILDs are history (the local outbox adds them to the
    aggregates), the sixth's start gets their p50/p95 from the same consumer, the local ticker
    fires its overrun a moment later, and the run page shows both."""
    import uuid

    import requests
    from playwright.sync_api import expect

    _, token, _ = stack
    with start_chalice_local(STAGETRACK_ADMIN_TOKEN=token, STAGETRACK_LOCAL_TICKER="1",
                             STAGETRACK_TABLE=f"overruns-{uuid.uuid4().hex[:12]}") as (base, log_path):
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        for _ in range(5):
            created = http.post(f"{base}/api/runs", json={"pipeline": "dash-eta", "stages": ["BUILD"]}).json()
            _patch(http, base, created["stages"][0]["id"], "IN_PROGRESS")
            _patch(http, base, created["stages"][0]["id"], "SUCCESS")
        run = http.post(f"{base}/api/runs", json={"pipeline": "dash-eta", "stages": ["BUILD"]}).json()
        _patch(http, base, run["stages"][0]["id"], "IN_PROGRESS")
        _sign_in(page, base, token)
        page.goto(f"{base}/#/runs/{run['id']}")
        row = page.locator("#stages tr[data-stage='BUILD']")
        expect(row).to_contain_text("overrunning", timeout=WAIT_MS)
        expect(page.locator("#run-eta")).to_be_visible()
        assert page.problems == [], log_path


def test_a_read_only_token_sees_no_buttons_and_the_api_refuses_it(stack, page):
    from playwright.sync_api import expect

    base, _admin, http = stack
    run = _run(http, base, "dash-ro")
    build, deploy = (s["id"] for s in run["stages"])
    _patch(http, base, build, "IN_PROGRESS")
    _patch(http, base, build, "SUCCESS")
    _patch(http, base, deploy, "IN_PROGRESS")  # waiting for approval: an operator would see buttons
    issued = http.post(f"{base}/api/tokens", json={"name": "viewer", "scopes": ["read"]})
    assert issued.status_code == 201, issued.text

    _sign_in(page, base, issued.json()["token"])
    page.goto(f"{base}/#/runs/{run['id']}")
    deploy_row = page.locator("#stages tr[data-stage='DEPLOY_PROD']")
    expect(deploy_row).to_contain_text("waiting for approval", timeout=WAIT_MS)
    expect(page.get_by_role("button")).to_have_count(1)  # only "Sign out"
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    # what a page script could do with the session: the API refuses the write (403, not 401)
    answer = page.evaluate("""async (id) => {
        const session = await (await fetch("api/session")).json();
        const response = await fetch(`api/stages/${encodeURIComponent(id)}/approve`, {
            method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": session.csrfToken},
            body: "{}"});
        return {status: response.status, body: await response.json(), cookie: document.cookie};
    }""", deploy)
    assert answer["status"] == 403 and answer["body"]["error"]["code"] == "forbidden"
    assert "stagetrack_session" not in answer["cookie"]  # HttpOnly: scripts never see it
    assert http.get(f"{base}/api/stages/{deploy}").json()["status"] == "WAITING_FOR_APPROVAL"

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Token")).to_be_visible(timeout=WAIT_MS)
    after = page.evaluate("async () => (await fetch('api/session')).status")
    assert after == 401
    assert not re.search(r"st_[A-Za-z0-9_-]{43}", page.url)  # the token never went in a URL


def test_without_chromium_ci_fails_and_a_developer_is_told_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(globals(), "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true and .*apt-get install -y chromium"):
        _chromium_or_skip()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install -y chromium"):
        _chromium_or_skip()
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert re.search(r'"\$\{CI:-\}" = "true" \] && \[ ! -x /usr/bin/chromium \]', ci)
    assert "apt-get install -y -q --no-install-recommends chromium" in ci


def test_keyboard_only_on_a_phone_in_the_dark(stack, browser):
    from playwright.sync_api import expect

    base, token, http = stack
    run = _run(http, base, "dash-phone")
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(base + "/")
        expect(page.get_by_label("Token")).to_be_focused(timeout=WAIT_MS)  # focus starts in the field
        page.keyboard.type(token)
        page.keyboard.press("Enter")
        expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=WAIT_MS)
        page.goto(f"{base}/#/runs/{run['id']}")
        expect(page.locator("#stages tr[data-stage='BUILD']")).to_contain_text("idle", timeout=WAIT_MS)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(13, 17, 23)"  # the dark palette
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0  # nothing wider than the phone: wide tables scroll inside themselves
        _shot(page, "run-phone-dark")

        # the Cancel run dialog opens, takes focus and closes with Escape, without a write
        page.get_by_role("button", name="Cancel run").focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(dialog.get_by_label("Reason (optional)")).to_be_focused()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        assert http.get(f"{base}/api/runs/{run['id']}").json()["status"] != "CANCELLED"
    finally:
        context.close()


# ---- the Insights page ----

INSIGHTS_ROUTE = re.compile(r"/api/insights(\?|$)")


def _insights_double(page, answer: dict) -> list[str]:
    """Answers the page's `GET /api/insights` in the browser with ``answer`` (the issue's shape,
    tests/fixtures/insights.py); every other request goes to the real app. Returns the URLs the
    page asked for, to check the filters it sends."""
    import json

    asked: list[str] = []

    def fulfil(route) -> None:
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))

    page.route(INSIGHTS_ROUTE, fulfil)
    return asked


def test_insights_page_draws_the_figures_plots_and_stage_tables(stack, page):
    """The page's drawing of an answer in the issue's exact shape, served by a browser-side
    double of the route (the real route is the next test's); the session, the pipelines list and
    the page itself are the real app's, under its strict CSP."""
    from urllib.parse import parse_qs, urlsplit

    from playwright.sync_api import expect

    from tests.fixtures.insights import sample

    base, token, http = stack
    _run(http, base, "dash-insights-web")
    asked = _insights_double(page, sample())
    _sign_in(page, base, token)
    page.get_by_role("link", name="Insights").click()
    summary = page.locator("#summary")
    expect(summary).to_contain_text("40", timeout=WAIT_MS)
    tiles = {t.locator(".tile-title").inner_text(): t.locator(".tile-value").inner_text()
             for t in page.locator(".tile").all()}
    assert tiles == {"Runs": "40", "Success rate": "78.9%", "Duration p50": "4m 10s", "Queue p50": "4s",
                     "MTTR": "1h 30m", "Deployment frequency": "2.5 / day", "Lead time p50": "2h 0m",
                     "Change failure rate": "10.0%", "Time to restore p50": "1h 0m"}
    expect(summary).to_contain_text("p90 10m 11s · p95 12m 22s · mean 5m 1s")
    expect(summary).to_contain_text("30 success · 6 failure · 2 cancelled · 2 timed out")

    # the plots: the empty middle day is a gap (two band pieces, two p50 points), not a zero
    expect(page.locator("#c-duration svg[role=img] polygon.band")).to_have_count(2)
    expect(page.locator("#c-duration svg circle.point")).to_have_count(2)
    expect(page.locator("#c-success svg circle.point")).to_have_count(2)
    expect(page.locator("#c-throughput svg rect.bar")).to_have_count(3)
    assert page.locator("#c-throughput rect.bar title").first.text_content() == "2026-03-01: 25 runs"
    label = page.locator("#c-duration svg").get_attribute("aria-label")
    assert label == "Run duration per day: p50 4m 10s, p95 12m 22s over the window"
    heights = [float(r.get_attribute("height")) for r in page.locator("#c-throughput rect.bar").all()]
    assert heights[1] == 0 and heights[0] > heights[2] > 0  # 25, 0, 15 runs

    slowest = [r.get_attribute("data-stage") for r in page.locator("#slowest tbody tr").all()]
    assert slowest == ["integration-tests", "build", "deploy"]  # by p95
    flakiest = [r.get_attribute("data-stage") for r in page.locator("#flakiest tbody tr").all()]
    assert flakiest == ["integration-tests", "deploy"]  # build never flaked: not listed
    expect(page.locator("#flakiest tr[data-stage='integration-tests']")).to_contain_text("12.5%")
    page.get_by_text("The series as a table").click()
    expect(page.locator("#series")).to_be_visible()
    assert page.locator("#series tbody tr").nth(1).inner_text().split() == ["2026-03-02", "0", "—", "—", "—"]
    _shot(page, "insights")

    # the filters, by keyboard: they become the URL (#/insights?...) and the query of the route
    page.get_by_label("Stage", exact=True).focus()
    page.keyboard.type("build")
    page.get_by_label("From").fill("2026-03-01")
    page.get_by_label("Granularity").select_option("week")
    page.get_by_label("Pipeline").select_option("dash-insights-web")
    page.get_by_label("Granularity").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Show")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#/insights\?pipeline=dash-insights-web&stage=build&from=2026-03-01"
                                        r"&granularity=week$"), timeout=WAIT_MS)
    expect(page.locator("#window")).to_contain_text("pipeline dash-insights-web, stage build",
                                                    timeout=WAIT_MS)
    expect(page.locator("#window")).to_contain_text("2026-03-01 – 2026-03-03 · by day")
    assert parse_qs(urlsplit(asked[-1]).query) == {"pipeline": ["dash-insights-web"], "stage": ["build"],
                                                   "from": ["2026-03-01"], "granularity": ["week"]}
    assert parse_qs(urlsplit(asked[0]).query) == {}  # first visit: the server's defaults
    assert page.problems == []  # no CSP violation, no script error


def test_insights_page_on_a_phone_in_the_dark_with_an_empty_window(stack, browser):
    from playwright.sync_api import expect

    from tests.fixtures.insights import empty

    base, token, _http = stack
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        _insights_double(page, empty())
        _sign_in(page, base, token)
        page.goto(f"{base}/#/insights")
        expect(page.locator("#summary")).to_contain_text("Runs", timeout=WAIT_MS)
        assert page.locator("#summary .tile-value").all_inner_texts()[:2] == ["0", "—"]
        expect(page.get_by_text("No stage ran in this window.")).to_be_visible()
        expect(page.get_by_text("No stage failed and then passed on a retry.")).to_be_visible()
        for chart in ("c-duration", "c-success", "c-throughput"):  # no data: said, not drawn as zeros
            expect(page.locator(f"#{chart} svg")).to_contain_text("no runs in this window")
        assert page.locator("#c-throughput rect.bar").count() == 0
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0  # the plots are drawn at the phone's width
        width = float(page.locator("#c-duration svg").get_attribute("width"))
        assert width <= 390
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(13, 17, 23)"
        _shot(page, "insights-phone-dark")
    finally:
        context.close()


def test_insights_page_answers_from_the_real_route(stack, page, start_chalice_local):
    """Runs created through the API, the page reading the real `GET /api/insights`, on a stack
    with the local ticker and outbox threads as `make run` has them (the aggregates are fed from
    the change stream). Skips itself while the route is absent (it lands with the aggregates,
    issue 14's other half)."""
    import time
    import uuid

    import requests
    from playwright.sync_api import expect

    base, token, http = stack
    if http.get(f"{base}/api/insights").status_code == 404:
        pytest.skip("GET /api/insights answers 404: the route is not on this branch yet "
                    "(it lands with issue 14's aggregates; this test runs as soon as it does)")
    with start_chalice_local(STAGETRACK_ADMIN_TOKEN=token, STAGETRACK_LOCAL_TICKER="1",
                             STAGETRACK_TABLE=f"insights-{uuid.uuid4().hex[:12]}") as (base, log_path):
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        for status in ("SUCCESS", "SUCCESS", "FAILURE"):  # one-stage runs: each ends with its stage
            created = http.post(f"{base}/api/runs", json={"pipeline": "dash-insights-real",
                                                          "stages": ["BUILD"]})
            assert created.status_code == 201, created.text
            build = created.json()["stages"][0]["id"]
            _patch(http, base, build, "IN_PROGRESS")
            _patch(http, base, build, status)
        deadline = time.monotonic() + WAIT_MS / 1000
        while True:  # the stream consumer adds finished runs within seconds
            answer = http.get(f"{base}/api/insights", params={"pipeline": "dash-insights-real"}).json()
            if answer["runs"]["total"] >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answer["runs"]["total"] == 3 and answer["runs"]["failure"] == 1, (answer, log_path)

        _sign_in(page, base, token)
        page.goto(f"{base}/#/insights?pipeline=dash-insights-real")
        expect(page.locator("#window")).to_contain_text("pipeline dash-insights-real", timeout=WAIT_MS)
        tiles = dict(zip(page.locator(".tile-title").all_inner_texts(),
                         page.locator(".tile-value").all_inner_texts(), strict=True))
        assert tiles["Runs"] == "3"
        rate = answer["successRate"]
        assert tiles["Success rate"] == (f"{rate * 100:.1f}%" if rate is not None else "—")
        expect(page.locator("#c-throughput svg")).to_have_count(1)
        assert page.problems == []


# ---- issue 15's controls: schedules, approval policies, concurrency, retries, graceful stop ----

def test_schedules_page_create_disable_enable_and_delete_by_keyboard_and_mouse(stack, page):
    """A pipeline's Schedules tab: a bad cron is refused with the field named (nothing written),
    a good one appears with its time zone, variables and next fire time; Disable and Enable act at
    once, Delete asks first. Every write carries the session's CSRF token (else 403)."""
    from playwright.sync_api import expect

    base, token, http = stack
    _run(http, base, "dash-sched")  # a schedule repeats the latest run: the pipeline must have run
    _sign_in(page, base, token)
    page.goto(f"{base}/#/pipelines/dash-sched")
    page.get_by_role("link", name="Schedules").click()
    expect(page.get_by_text("No schedules yet.")).to_be_visible(timeout=WAIT_MS)

    page.get_by_label("Cron").fill("61 * * * *")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.locator("#s-error")).to_contain_text("cron", timeout=WAIT_MS)
    expect(page.get_by_label("Cron")).to_have_attribute("aria-invalid", "true")
    assert http.get(f"{base}/api/pipelines/dash-sched/schedules").json()["items"] == []

    page.get_by_label("Cron").fill("0 0 29 2 *")  # 29 February: never fires during the test
    page.get_by_label("Time zone").fill("Europe/Paris")
    page.get_by_label("Variables").fill("ENV=prod\nREGION=eu-west-1")
    page.get_by_label("Description").fill("leap day deploy")
    page.get_by_label("Description").press("Enter")  # submits the form from the keyboard
    card = page.locator("section.schedule")
    expect(card).to_have_count(1, timeout=WAIT_MS)
    expect(card).to_contain_text("0 0 29 2 *")
    expect(card).to_contain_text("Europe/Paris")
    expect(card).to_contain_text("ENV=prod")
    expect(card.locator(".badge")).to_have_text("enabled")
    (stored,) = http.get(f"{base}/api/pipelines/dash-sched/schedules").json()["items"]
    assert stored["variables"] == {"ENV": "prod", "REGION": "eu-west-1"} and stored["nextFireAt"]
    assert stored["description"] == "leap day deploy" and stored["createdBy"] == "bootstrap admin"

    card.get_by_role("button", name=re.compile("^Disable")).click()
    expect(card.locator(".badge")).to_have_text("disabled", timeout=WAIT_MS)
    expect(card).to_contain_text("— (disabled)")
    assert http.get(f"{base}/api/pipelines/dash-sched/schedules").json()["items"][0]["enabled"] is False
    card.get_by_role("button", name=re.compile("^Enable")).click()
    expect(card.locator(".badge")).to_have_text("enabled", timeout=WAIT_MS)
    expect(page.locator("#toast")).to_contain_text("Enabled schedule 0 0 29 2 * (leap day deploy)")
    page.evaluate("document.getElementById('toast').textContent = ''")  # the screenshot without it
    _shot(page, "schedules")

    card.get_by_role("button", name=re.compile("^Delete")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")  # backing out writes nothing
    expect(dialog).to_be_hidden()
    assert len(http.get(f"{base}/api/pipelines/dash-sched/schedules").json()["items"]) == 1
    card.get_by_role("button", name=re.compile("^Delete")).click()
    dialog.get_by_role("button", name="Delete schedule").click()
    expect(page.get_by_text("No schedules yet.")).to_be_visible(timeout=WAIT_MS)
    assert http.get(f"{base}/api/pipelines/dash-sched/schedules").json()["items"] == []
    # the browser logs the refused bad cron's 422 itself; nothing else went wrong
    assert [p for p in page.problems if "status of 422" not in p] == []


def test_schedules_page_for_a_read_only_token_on_a_phone_in_the_dark(stack, browser):
    from playwright.sync_api import expect

    base, _admin, http = stack
    _run(http, base, "dash-sched-ro")
    made = http.post(f"{base}/api/pipelines/dash-sched-ro/schedules",
                     json={"cron": "30 6 * * MON-FRI", "timeZone": "America/New_York", "enabled": False,
                           "description": "weekday mornings"})
    assert made.status_code == 201, made.text
    issued = http.post(f"{base}/api/tokens", json={"name": "sched-viewer", "scopes": ["read"]})
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        _sign_in(page, base, issued.json()["token"])
        page.goto(f"{base}/#/pipelines/dash-sched-ro/schedules")
        card = page.locator("section.schedule")
        expect(card).to_contain_text("weekday mornings", timeout=WAIT_MS)
        expect(card).to_contain_text("America/New_York")
        expect(page.get_by_role("button")).to_have_count(1)  # only "Sign out": no form, no actions
        expect(page.get_by_label("Cron")).to_have_count(0)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(13, 17, 23)"
        _shot(page, "schedules-phone-dark")
    finally:
        context.close()


def test_run_page_shows_policy_gates_queue_places_pending_retries_and_a_stop(stack, page):
    """What the run page says of each control: a policy gate's "N of M approvals" and why this
    token may not decide (no buttons then), a QUEUED run's group and place, a stage waiting for
    its automatic retry, and a stopping run's grace end."""
    from playwright.sync_api import expect

    base, token, http = stack
    gated = http.post(f"{base}/api/runs", json={"pipeline": "dash-policy", "stages": [
        {"type": "DEPLOY_PROD", "name": "prod", "approval": "MANUAL", "approvers": ["dash-rm-a", "dash-rm-b"],
         "required": 2},
        {"type": "BUILD", "name": "build", "retry": {"max": 2, "backoffSeconds": 3600}},
        {"type": "OTHER", "name": "cleanup", "always": True}]}).json()
    _patch(http, base, f"{gated['id']}:1", "IN_PROGRESS")
    _patch(http, base, f"{gated['id']}:2", "IN_PROGRESS")
    _patch(http, base, f"{gated['id']}:2", "FAILURE")  # retried in an hour: RETRY_PENDING

    setting = http.put(f"{base}/api/pipelines/dash-policy/concurrency", json={"mode": "QUEUED"})
    assert setting.status_code == 200, setting.text
    holder = http.post(f"{base}/api/runs", json={"pipeline": "dash-policy", "stages": ["BUILD"]}).json()
    queued = http.post(f"{base}/api/runs", json={"pipeline": "dash-policy", "stages": ["BUILD"]}).json()
    assert queued["status"] == "QUEUED"

    _sign_in(page, base, token)
    page.goto(f"{base}/#/runs/{gated['id']}")
    prod = page.locator("#stages tr[data-stage='prod']")
    expect(prod).to_contain_text("0 of 2 approvals", timeout=WAIT_MS)
    expect(prod).to_contain_text("You (bootstrap admin) are not an allowed approver: dash-rm-a, dash-rm-b.")
    expect(prod.get_by_role("button")).to_have_count(0)
    build = page.locator("#stages tr[data-stage='build']")
    expect(build).to_contain_text("retry pending")
    expect(build).to_contain_text("retry 1 of 2 at")
    expect(build.get_by_role("button", name="Retry build now")).to_be_visible()
    expect(page.locator("#stages tr[data-stage='cleanup'] th")).to_have_text("cleanup · finally")

    page.goto(f"{base}/#/runs/{queued['id']}")
    expect(page.locator("#queue-place")).to_have_text(
        f"dash-policy: waits, 1 of 1 in line, behind {holder['id']}", timeout=WAIT_MS)
    page.get_by_role("link", name=holder["id"]).click()
    expect(page.locator("h1")).to_contain_text(f"dash-policy #{holder['counter']}", timeout=WAIT_MS)
    _patch(http, base, holder["stages"][0]["id"], "IN_PROGRESS")
    page.get_by_role("button", name="Stop").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Grace period in seconds (optional)").fill("120")
    dialog.get_by_role("button", name="Stop run").click()
    expect(page.locator("dl.meta")).to_contain_text("running stages may finish until", timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Stop")).to_have_count(0)  # stopping: only Cancel ends it sooner
    expect(page.locator("#stages tr[data-stage='BUILD']")).to_contain_text("unless it ends (stop)")
    stopping = http.get(f"{base}/api/runs/{holder['id']}").json()
    assert stopping["status"] == "CANCELLING" and stopping["stopping"]["graceSeconds"] == 120

    # the pipeline page: its concurrency shown, and changed by an operate token
    page.get_by_role("link", name="dash-policy").first.click()
    expect(page.locator("h1 .concurrency")).to_contain_text("concurrency queued", timeout=WAIT_MS)
    page.get_by_text("Concurrency", exact=True).click()
    page.get_by_label("Concurrency of new runs").select_option("SUPERSEDED")
    page.get_by_role("button", name="Save concurrency").click()
    expect(page.locator("h1 .concurrency")).to_contain_text("concurrency superseded", timeout=WAIT_MS)
    assert http.get(f"{base}/api/pipelines/dash-policy/status").json()["concurrency"] == {
        "mode": "SUPERSEDED", "group": None, "queue": "ALL"}
    assert page.problems == []
