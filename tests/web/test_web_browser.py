"""The dashboard in a real browser (Debian's Chromium through Playwright) against real
``process-balancer run`` processes: what the page lists, and what its buttons do to them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from process_balancer import Client
from process_balancer.config.schema import load_config
from process_balancer.web import BackgroundServer, create_app
from support.harness import IterationLog, Process, settled, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TOKEN = "browser-test-token-58c2e1a9"
JOB = {"class": "support.jobs:RecordingJob", "records": 4, "record_time": 0.025}
#: Browser-side waits: the machine may be busy with other test suites.
UI_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI requires it")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    yield page
    context.close()


@pytest.fixture
def dashboard() -> Iterator[Callable[..., tuple[str, Client]]]:
    """Serve the dashboard of a config's group in a thread; its URL and its client."""
    with ExitStack() as stack:

        def start(
            config: Path, *, token: str | None = TOKEN, mount: str | None = None
        ) -> tuple[str, Client]:
            client = Client(load_config(config))
            stack.callback(client.close)
            app: Any = create_app(client, token=token, sample_interval=1)
            if mount is not None:
                # A mounted app gets no lifespan events: stop its sampler here.
                stack.callback(app.state.sampler.stop)
                app = Starlette(routes=[Mount(mount, app=app)])
            server = stack.enter_context(BackgroundServer(app))
            return server.url + (mount.strip("/") + "/" if mount else ""), client

        yield start


@pytest.fixture
def two(group_config, spawn, iteration_log: IterationLog) -> tuple[Path, Process, Process]:
    """Two processes sharing job q's 4 slots 2/2."""
    config = group_config({"q": {**JOB, "workers": 4}})
    a = spawn(config, "a")
    b = spawn(config, "b")
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 2}), 20, message="a 2/2 split")
    return config, a, b


def process_row(page: Any, proc: Process) -> Any:
    return page.locator(f'#processes tr[data-identity*=":{proc.pid}:"]')


def job_cell(page: Any, job: str, test_id: str) -> Any:
    return page.locator(f'#jobs tr[data-job="{job}"] [data-test="{test_id}"]')


def unlock(page: Any, token: str = TOKEN) -> None:
    page.fill("#token-input", token)
    page.click("#unlock button[type=submit]")
    page.wait_for_selector("#unlock-unlocked:not([hidden])")


def expect_text(locator: Any, text: str) -> None:
    from playwright.sync_api import expect

    expect(locator).to_contain_text(text, timeout=UI_TIMEOUT_MS)


# -- what the page shows -----------------------------------------------------------------------


def test_the_page_lists_the_processes_with_their_slots_and_follows_changes_live(
    page: Any, dashboard, two, spawn, iteration_log: IterationLog
) -> None:
    config, a, b = two
    url, _client = dashboard(config)
    page.goto(url)
    for proc in (a, b):
        row = process_row(page, proc)
        expect_text(row, "active")
        expect_text(row.locator(".slots"), "q")
        expect_text(row, "2 / 10")
    expect_text(job_cell(page, "q", "running"), "4")
    page.wait_for_selector("#chart-iterations polyline", state="attached")

    # Given the page stays open, when a third process joins, its row appears without a reload.
    page.evaluate("window.loadedOnce = true")
    c = spawn(config, "c")
    expect_text(process_row(page, c), "active")
    wait_until(settled(iteration_log, {a.pid: 2, b.pid: 1, c.pid: 1}, 1.0), 20, message="3 way")
    assert page.evaluate("window.loadedOnce") is True
    expect_text(page.locator('[data-test="processes-count"]'), "3")


@pytest.mark.backends("redis")
def test_a_read_only_dashboard_has_no_buttons_and_says_how_to_enable_them(
    page: Any, dashboard, group_config
) -> None:
    url, _client = dashboard(group_config({"q": {**JOB, "workers": 1}}), token=None)
    page.goto(url)
    expect_text(page.locator("#read-only"), "PROCESS_BALANCER_WEB_TOKEN")
    assert page.locator("form[data-action]").count() == 0
    assert page.locator("#unlock").count() == 0


# -- actions -----------------------------------------------------------------------------------


@pytest.mark.backends("redis")
def test_scaling_from_the_page_changes_the_running_slots(
    page: Any, dashboard, two, iteration_log: IterationLog
) -> None:
    config, a, b = two
    url, client = dashboard(config)
    page.goto(url)
    unlock(page)
    page.fill('#jobs tr[data-job="q"] input[name="count"]', "6")
    page.click('#jobs tr[data-job="q"] form[data-action="scale"] button')
    expect_text(page.locator("#flash"), "q: 6 workers (was 4)")

    wait_until(settled(iteration_log, {a.pid: 3, b.pid: 3}), 20, message="a 3/3 split")
    wait_until(
        lambda: client.status()["jobs"]["q"]["running"] == 6, 10, message="6 running in the status"
    )
    expect_text(job_cell(page, "q", "running"), "6")
    expect_text(job_cell(page, "q", "scheduled"), "6 runtime")


@pytest.mark.backends("redis")
def test_quieting_a_process_from_the_page_moves_its_slots(
    page: Any, dashboard, two, iteration_log: IterationLog
) -> None:
    config, a, b = two
    url, client = dashboard(config)
    page.goto(url)
    unlock(page)
    page.once("dialog", lambda dialog: dialog.accept())
    process_row(page, a).locator('form[data-action="quiet"] button').click()
    expect_text(page.locator("#flash"), "quiet acknowledged in")

    wait_until(settled(iteration_log, {b.pid: 4}), 20, message="b runs all 4")
    expect_text(process_row(page, a), "quiet")
    assert process_row(page, a).locator('form[data-action="quiet"]').count() == 0
    assert a.popen.poll() is None
    states = {p["pid"]: p["state"] for p in client.status()["processes"]}
    assert states == {a.pid: "quiet", b.pid: "active"}


@pytest.mark.backends("redis")
def test_an_action_without_the_token_is_refused(page: Any, dashboard, group_config) -> None:
    url, client = dashboard(group_config({"q": {**JOB, "workers": 1}}))
    page.goto(url)
    page.fill('#jobs tr[data-job="q"] input[name="count"]', "9")
    page.click('#jobs tr[data-job="q"] form[data-action="scale"] button')
    flash = page.locator("#flash.error")
    expect_text(flash, "refused: this action needs the dashboard token")
    assert client.scheduled_workers("q") == 1

    page.fill("#token-input", "not-the-token")
    page.click("#unlock button[type=submit]")
    expect_text(flash, "refused: wrong dashboard token")
    assert page.locator("#unlock-unlocked").is_hidden()


@pytest.mark.backends("redis")
def test_the_page_works_mounted_under_a_prefix(
    page: Any, dashboard, group_config, spawn, iteration_log: IterationLog
) -> None:
    config = group_config({"q": {**JOB, "workers": 2}})
    a = spawn(config, "a")
    url, client = dashboard(config, mount="/ops/balancer")
    assert url.endswith("/ops/balancer/")
    page.goto(url)
    expect_text(process_row(page, a), "active")
    expect_text(page.locator("#live-state"), "live ·")
    page.wait_for_selector("#chart-records polyline", state="attached")

    unlock(page)
    page.click('#jobs tr[data-job="q"] form[data-action="pause"] button')
    expect_text(page.locator("#flash"), "q: paused, 0 workers (resume restores 2)")
    expect_text(job_cell(page, "q", "running"), "0")
    page.click('#jobs tr[data-job="q"] form[data-action="resume"] button')
    expect_text(page.locator("#flash"), "q: resumed, 2 workers")
    wait_until(settled(iteration_log, {a.pid: 2}), 20, message="2 slots again")
    assert client.scheduled_workers("q") == 2
