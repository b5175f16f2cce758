"""Take docs/dashboard.png: two real processes run a demo group, the dashboard shows them.

    python docs/screenshot.py [--backend redis://127.0.0.1:6379/0] [--seconds 45]

Starts two ``process-balancer run`` processes with three demo jobs (one of them fails now and
then, so the errors table has something to show), serves the dashboard in a thread, scales a
job halfway so the throughput chart moves, and screenshots the page with Debian's Chromium
through Playwright at 1280x800. Needs the dev extra and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from playwright.sync_api import sync_playwright

import process_balancer
from process_balancer.config.schema import load_config
from process_balancer.web import BackgroundServer, create_app

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

DEMO_JOBS = '''
import random
import time

import process_balancer


class DrainQueue(process_balancer.Base):
    """Claims a batch of rows, handles each one."""

    def lock_records(self):
        return range(random.randint(15, 25))

    def process_record(self, record):
        time.sleep(0.004)

    def unlock_records(self):
        pass


class SyncTenants(DrainQueue):
    def process_record(self, record):
        time.sleep(0.012)


class PollApi(DrainQueue):
    """Times out now and then, as a flaky upstream does."""

    def lock_records(self):
        if random.random() < 0.05:
            raise TimeoutError("upstream API did not answer within 10s")
        return range(3)

    def process_record(self, record):
        time.sleep(0.05)

    def unlock_records(self):
        self.status_sleep(0.5)
'''

CONFIG = """
global:
  backend: {backend}
  namespace: {namespace}
  max_threads: 6
jobs:
  process_queue:
    class: demo_jobs:DrainQueue
    workers: 4
  sync_tenants:
    class: demo_jobs:SyncTenants
    workers: 2
  poll_api:
    class: demo_jobs:PollApi
    workers: 1
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--seconds", type=float, default=45.0, help="how long to run first")
    parser.add_argument("--output", type=Path, default=HERE / "dashboard.png")
    args = parser.parse_args()

    namespace = f"demo-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "demo_jobs.py").write_text(textwrap.dedent(DEMO_JOBS))
        config = workdir / "process_balancer.yml"
        config.write_text(CONFIG.format(backend=args.backend, namespace=namespace))
        runners = [
            subprocess.Popen(
                [sys.executable, "-m", "process_balancer", "run", "-c", str(config)],
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        client = process_balancer.Client(load_config(config))
        try:
            app = create_app(client, token="demo-token-for-the-screenshot", sample_interval=2)
            with BackgroundServer(app) as server:
                run_demo(client, server.url, args.seconds, args.output)
        finally:
            for runner in runners:
                runner.send_signal(signal.SIGTERM)
            for runner in runners:
                runner.wait(40)
            client.close()
            forget(args.backend, namespace)
    print(f"saved {args.output}")


def forget(backend: str, namespace: str) -> None:
    """Delete what the demo group left in Redis (its counts; the processes left already)."""
    if backend.startswith(("redis://", "rediss://", "unix://")):
        import redis

        connection = redis.Redis.from_url(backend)
        keys = list(connection.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            connection.delete(*keys)
        connection.close()


def run_demo(client: process_balancer.Client, url: str, seconds: float, output: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        time.sleep(seconds / 2)
        client.adjust_scheduled_workers("sync_tenants", to=4)
        time.sleep(seconds / 2)
        page.fill("#token-input", "demo-token-for-the-screenshot")
        page.click("#unlock button[type=submit]")
        page.wait_for_selector("#unlock-unlocked:not([hidden])")
        page.evaluate("document.getElementById('flash').hidden = true")
        time.sleep(2.5)
        page.screenshot(path=str(output))
        browser.close()


if __name__ == "__main__":
    main()
