"""The dashboard over real HTTP (uvicorn on a loopback port) against the real Redis: who may
act, how other sites are kept out, what the actions answer, and that no secret leaks."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.routing import Mount

from process_balancer import Client
from process_balancer.config.schema import load_config
from process_balancer.web import BackgroundServer, create_app
from support.cli import free_port
from support.harness import TESTS_DIR, wait_until

TOKEN = "web-test-token-7f3a9c1e5b"

WebFactory = Callable[..., httpx.Client]


def write_group(path: Path, backend: str, namespace: str) -> Path:
    path.write_text(
        f"global:\n  backend: {backend}\n  namespace: {namespace}\n"
        "jobs:\n  q:\n    class: support.jobs:RecordingJob\n    workers: 2\n"
    )
    return path


@pytest.fixture
def config_file(tmp_path: Path, sqlite_backend_url: str, namespace: str) -> Path:
    return write_group(tmp_path / "process_balancer.yml", sqlite_backend_url, namespace)


@pytest.fixture
def client(config_file: Path) -> Iterator[Client]:
    client = Client(load_config(config_file))
    yield client
    client.close()


@pytest.fixture
def web(client: Client) -> Iterator[WebFactory]:
    """Serve a dashboard of ``client`` (or the given app) and return an HTTP client for it."""
    with ExitStack() as stack:

        def start(app: Any = None, **options: Any) -> httpx.Client:
            options.setdefault("token", TOKEN)
            server = stack.enter_context(BackgroundServer(app or create_app(client, **options)))
            return stack.enter_context(httpx.Client(base_url=server.url.rstrip("/"), timeout=15))

        yield start


def origin(http: httpx.Client) -> str:
    return str(http.base_url).rstrip("/")


def page_csrf(http: httpx.Client, path: str = "/") -> str:
    """Open the page like a browser; the CSRF token its cookie carries."""
    assert http.get(path).status_code == 200
    return http.cookies["pb_csrf"]


def form_post(
    http: httpx.Client, path: str, fields: dict[str, str], **headers: str
) -> httpx.Response:
    """POST like the page does: form fields, Origin of the dashboard itself."""
    return http.post(path, data=fields, headers={"Origin": origin(http), **headers})


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- read-only ---------------------------------------------------------------------------------


def test_without_a_token_the_page_is_read_only_and_says_how_to_enable_actions(
    web: WebFactory, client: Client, namespace: str
) -> None:
    http = web(token=None)
    page = http.get("/")
    assert page.status_code == 200
    assert namespace in page.text
    assert "Read-only." in page.text and "PROCESS_BALANCER_WEB_TOKEN" in page.text
    assert "data-action" not in page.text and 'id="unlock"' not in page.text

    refused = http.post("/actions/scale", data={"job": "q", "count": "5"}, headers=bearer())
    assert refused.status_code == 403
    assert "no dashboard token is configured" in refused.json()["message"]
    assert client.scheduled_workers("q") == 2


def test_read_only_mode_renders_no_actions_and_refuses_them_even_with_the_token(
    web: WebFactory, client: Client
) -> None:
    http = web(read_only=True)
    page = http.get("/")
    assert "--read-only" in page.text
    assert "data-action" not in page.text and 'id="unlock"' not in page.text
    refused = http.post("/actions/pause", data={"job": "q"}, headers=bearer())
    assert refused.status_code == 403
    assert "read-only" in refused.json()["message"]
    assert client.scheduled_workers("q") == 2


# -- the token ---------------------------------------------------------------------------------


def test_with_a_token_the_page_has_actions_but_never_shows_the_token(web: WebFactory) -> None:
    http = web()
    page = http.get("/")
    assert 'data-action="scale"' in page.text and 'id="unlock"' in page.text
    assert "Read-only." not in page.text
    assert TOKEN not in page.text
    assert TOKEN not in http.get("/api/live").text


def test_an_action_without_the_right_token_is_refused_with_403(
    web: WebFactory, client: Client
) -> None:
    http = web()
    csrf = page_csrf(http)
    fields = {"job": "q", "count": "5", "csrf_token": csrf}
    missing = form_post(http, "/actions/scale", fields)
    assert missing.status_code == 403
    assert missing.json() == {
        "ok": False,
        "message": "refused: this action needs the dashboard token: send it as "
        "'Authorization: Bearer TOKEN' or in the form field 'token' (on the page: unlock "
        "actions with it at the top)",
    }
    wrong = form_post(http, "/actions/scale", {**fields, "token": TOKEN + "x"})
    assert (wrong.status_code, wrong.json()["message"]) == (403, "refused: wrong dashboard token")
    basic = http.post("/actions/scale", data=fields, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 403 and "Bearer" in basic.json()["message"]
    assert client.scheduled_workers("q") == 2


def test_actions_are_post_only(web: WebFactory) -> None:
    http = web()
    assert http.get("/actions/scale", params={"job": "q", "count": "5"}).status_code == 405


def test_a_bearer_token_is_enough_for_scripts(web: WebFactory, client: Client) -> None:
    http = web()
    answer = http.post("/actions/scale", data={"job": "q", "count": "5"}, headers=bearer())
    assert answer.status_code == 200
    assert answer.json() == {"ok": True, "message": "q: 5 workers (was 2)"}
    assert client.scheduled_workers("q") == 5


# -- CSRF and cross-site requests --------------------------------------------------------------


def test_a_form_post_needs_the_csrf_token_of_the_page(web: WebFactory, client: Client) -> None:
    http = web()
    fields = {"job": "q", "count": "3", "token": TOKEN}
    no_cookie = form_post(http, "/actions/scale", {**fields, "csrf_token": "x" * 43})
    assert no_cookie.status_code == 403
    assert "CSRF token is missing or stale" in no_cookie.json()["message"]

    csrf = page_csrf(http)
    assert form_post(http, "/actions/scale", fields).status_code == 403
    mismatch = form_post(http, "/actions/scale", {**fields, "csrf_token": csrf[::-1]})
    assert mismatch.status_code == 403
    assert client.scheduled_workers("q") == 2

    assert form_post(http, "/actions/scale", {**fields, "csrf_token": csrf}).status_code == 200
    assert client.scheduled_workers("q") == 3
    as_header = form_post(
        http, "/actions/scale", {**fields, "count": "4"}, **{"X-CSRF-Token": csrf}
    )
    assert as_header.status_code == 200
    assert client.scheduled_workers("q") == 4


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
    ids=["origin", "null-origin", "referer", "fetch-site", "same-site-subdomain"],
)
def test_requests_from_other_sites_are_refused_even_with_token_and_csrf(
    web: WebFactory, client: Client, headers: dict[str, str]
) -> None:
    http = web()
    csrf = page_csrf(http)
    fields = {"job": "q", "count": "5", "token": TOKEN, "csrf_token": csrf}
    answer = http.post("/actions/scale", data=fields, headers=headers)
    assert answer.status_code == 403
    assert "request refused" in answer.json()["message"]
    with_bearer = http.post("/actions/scale", data=fields, headers={**headers, **bearer()})
    assert with_bearer.status_code == 403
    assert client.scheduled_workers("q") == 2


def test_a_form_post_without_origin_or_referer_is_refused(web: WebFactory, client: Client) -> None:
    http = web()
    csrf = page_csrf(http)
    fields = {"job": "q", "count": "5", "token": TOKEN, "csrf_token": csrf}
    answer = http.post("/actions/scale", data=fields)
    assert answer.status_code == 403
    assert "Origin or Referer" in answer.json()["message"]
    assert client.scheduled_workers("q") == 2


def test_the_csrf_cookie_is_http_only_same_site_strict_and_kept(web: WebFactory) -> None:
    http = web()
    first = http.get("/")
    cookie = first.headers["set-cookie"]
    assert cookie.startswith("pb_csrf=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    value = http.cookies["pb_csrf"]
    assert f'data-csrf="{value}"' in first.text
    again = http.get("/")
    assert "set-cookie" not in again.headers
    assert f'data-csrf="{value}"' in again.text


def test_every_response_forbids_framing_and_foreign_scripts(web: WebFactory) -> None:
    http = web()
    for path in ("/", "/api/status", "/api/live", "/static/dashboard.js"):
        response = http.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert http.get("/api/live").headers["cache-control"] == "no-store"
    assert http.get("/").headers["cache-control"] == "no-store"


def test_allowed_hosts_refuse_any_other_host_header(web: WebFactory) -> None:
    http = web(allowed_hosts=["127.0.0.1", "localhost"])
    assert http.get("/").status_code == 200
    rebound = http.get("/api/status", headers={"Host": "attacker.example:9292"})
    assert rebound.status_code == 400


# -- what the actions answer -------------------------------------------------------------------


def act(http: httpx.Client, name: str, **fields: str) -> tuple[int, str]:
    answer = http.post(f"/actions/{name}", data=fields, headers=bearer())
    return answer.status_code, answer.json()["message"]


def test_scale_pause_and_resume_answer_like_the_cli(web: WebFactory, client: Client) -> None:
    http = web()
    assert act(http, "scale", job="q", count="-1") == (
        400,
        "N must be 0 or more, got -1; nothing was changed",
    )
    assert act(http, "scale", job="q", count="2.5")[0] == 400
    assert act(http, "scale", job="nope", count="2")[0] == 404
    assert act(http, "scale", job="q")[0] == 400
    assert act(http, "pause", job="q") == (200, "q: paused, 0 workers (resume restores 2)")
    code, message = act(http, "pause", job="q")
    assert code == 409 and "paused already" in message
    assert act(http, "resume", job="q") == (200, "q: resumed, 2 workers")
    code, message = act(http, "resume", job="q")
    assert code == 409 and "is not paused" in message
    assert client.scheduled_workers("q") == 2


def test_scale_refuses_a_count_above_the_ceiling_and_writes_nothing(
    web: WebFactory, client: Client
) -> None:
    http = web()
    huge = "99999999999999999999999"
    assert act(http, "scale", job="q", count=huge) == (
        400,
        "N must be at most 10,000, the max_workers of job 'q' in the dashboard's config, got "
        f"{huge}; nothing was changed",
    )
    assert act(http, "scale", job="q", count="10001")[0] == 400
    assert act(http, "scale", job="q", count="1e3")[0] == 400
    assert act(http, "scale", job="q", count="9" * 5000)[0] == 400
    assert client.backend.get_count("q") is None
    assert act(http, "scale", job="q", count="10000") == (200, "q: 10000 workers (was 2)")


def test_pause_refuses_a_count_above_the_ceiling_with_409(
    web: WebFactory, client: Client, config_file: Path
) -> None:
    narrow = config_file.parent / "narrow.yml"
    narrow.write_text(config_file.read_text() + "    max_workers: 5\n")
    narrow_client = Client(load_config(narrow))
    try:
        client.adjust_scheduled_workers("q", to=6)
        http = web(create_app(narrow_client, token=TOKEN))
        code, message = act(http, "pause", job="q")
        assert code == 409 and "its count, 6, is above its ceiling of 5" in message
        assert client.backend.paused_counts() == {}
    finally:
        narrow_client.close()


def test_commands_to_a_process_that_is_not_live_are_404(web: WebFactory) -> None:
    http = web()
    for name in ("quiet", "stop"):
        code, message = act(http, name, identity="nobody:1:zzzzzz")
        assert code == 404
        assert message == "nobody:1:zzzzzz is not a live process; nothing was sent"


def test_bad_action_requests_are_refused_with_a_reason(web: WebFactory) -> None:
    http = web()
    unknown = http.post("/actions/explode", headers=bearer())
    assert unknown.status_code == 404 and "use one of" in unknown.json()["message"]
    as_json = http.post("/actions/scale", json={"job": "q", "count": 3}, headers=bearer())
    assert as_json.status_code == 415
    huge = http.post("/actions/scale", data={"job": "q" * 20000}, headers=bearer())
    assert huge.status_code == 413


def test_api_status_is_the_status_document(web: WebFactory, namespace: str) -> None:
    http = web()
    document = http.get("/api/status").json()
    assert document["schema"] == 1 and document["namespace"] == namespace
    assert document["jobs"]["q"]["scheduled"] == 2


# -- mounted inside another app ----------------------------------------------------------------


def test_it_works_mounted_under_a_prefix(
    web: WebFactory, client: Client, request: pytest.FixtureRequest
) -> None:
    inner = create_app(client, token=TOKEN)
    http = web(Starlette(routes=[Mount("/balancer", app=inner)]))
    request.addfinalizer(inner.state.sampler.stop)  # a mounted app gets no lifespan events
    redirect = http.get("/balancer", follow_redirects=False)
    assert redirect.status_code in (301, 307, 308)
    assert redirect.headers["location"].endswith("/balancer/")
    page = http.get("/balancer/")
    assert page.status_code == 200
    assert '<base href="/balancer/">' in page.text
    assert 'src="static/dashboard.js"' in page.text and 'action="actions/scale"' in page.text
    assert "Path=/balancer/" in page.headers["set-cookie"]
    assert http.get("/balancer/static/dashboard.css").status_code == 200
    assert http.get("/balancer/api/live").json()["html"]["tables"]
    csrf = http.cookies["pb_csrf"]
    fields = {"job": "q", "count": "6", "token": TOKEN, "csrf_token": csrf}
    assert form_post(http, "/balancer/actions/scale", fields).status_code == 200
    assert client.scheduled_workers("q") == 6


# -- secrets -----------------------------------------------------------------------------------

SECRET = "hunter2-9d81c0f6"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own that wants the password SECRET."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (CI requires it)")
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--requirepass", SECRET, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    connection = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(connection.ping())
        except redis.RedisError:
            return False

    wait_until(answers, 10, message="the password-protected redis-server")
    connection.close()
    yield url, proc
    proc.kill()
    proc.wait(10)


def test_no_page_json_answer_or_log_line_shows_a_password_or_the_token(
    web: WebFactory,
    tmp_path: Path,
    namespace: str,
    locked_redis: tuple[str, subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url, server = locked_redis
    client = Client(load_config(write_group(tmp_path / "locked.yml", url, namespace)))
    try:
        http = web(create_app(client, token=TOKEN, sample_interval=0.2))
        csrf = page_csrf(http)
        bodies = [http.get(path).text for path in ("/", "/api/status", "/api/live")]
        assert "redis://:***@127.0.0.1" in bodies[0]
        bodies.append(act(http, "scale", job="q", count="3")[1])
        bodies.append(act(http, "pause", job="nope")[1])
        bodies.append(form_post(http, "/actions/resume", {"job": "q", "csrf_token": csrf}).text)
        bodies.append(
            form_post(http, "/actions/check", {"token": "guess", "csrf_token": csrf}).text
        )
        time.sleep(0.5)  # the sampler reads the group a few times

        server.kill()
        server.wait(10)
        down = http.get("/")
        assert down.status_code == 503 and "cannot reach the backend" in down.text
        bodies.append(down.text)
        bodies += [http.get("/api/status").text, http.get("/api/live").text]
        bodies.append(act(http, "scale", job="q", count="4")[1])
        time.sleep(0.5)
    finally:
        client.close()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "cannot reach the backend" in "\n".join(bodies)
    for text in [*bodies, logged]:
        assert SECRET not in text
        assert TOKEN not in text


# -- the command -------------------------------------------------------------------------------

WEB_COMMAND = (sys.executable, "-m", "process_balancer", "web")


def test_the_web_command_serves_the_group_and_never_logs_the_token(config_file: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            *WEB_COMMAND,
            "-c",
            str(config_file),
            "--port",
            str(port),
            "--allowed-host",
            "ops.example",
        ],
        cwd=str(TESTS_DIR),
        env={**os.environ, "PROCESS_BALANCER_WEB_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            def page() -> httpx.Response | None:
                try:
                    return http.get("/")
                except httpx.TransportError:
                    return None

            assert wait_until(page, 20, 0.1, message="the dashboard").status_code == 200
            assert act(http, "scale", job="q", count="3") == (200, "q: 3 workers (was 2)")
            rebound = http.get("/", headers={"Host": "rebound.example"})
            assert rebound.status_code == 400
            assert "--allowed-host" in rebound.text
            assert http.get("/", headers={"Host": f"ops.example:{port}"}).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/ (actions enabled with the token)" in err
    assert "dashboard action scale from 127.0.0.1: q: 3 workers (was 2)" in err
    assert TOKEN not in out + err


def test_the_web_command_refuses_a_port_in_use(config_file: Path) -> None:
    with BackgroundServer(Starlette()) as taken:
        result = subprocess.run(
            [*WEB_COMMAND, "-c", str(config_file), "--port", str(taken.port)],
            cwd=str(TESTS_DIR),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"process-balancer: cannot serve the dashboard on 127.0.0.1:{taken.port}"
    )
    assert "Traceback" not in result.stderr
