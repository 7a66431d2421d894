"""The console's own server, started for real on 127.0.0.1:0: HTTP, and HTTPS with Secure
cookies and HSTS when a certificate is configured; a bad address fails at start."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from console.server import ConsoleError, ConsoleServer
from tests.console_env import PASSWORD, make_console_env
from tests.tls import self_signed


def _sign_in(client: httpx.Client) -> httpx.Response:
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    return client.post("/login", data={"login": "ann", "password": PASSWORD,
                       "csrf": token.group(1)})  # fmt: skip


def test_https_with_secure_cookies(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "127.0.0.1")
    env = make_console_env(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", n=5,
                           tls_cert=str(cert), tls_key=str(key))  # fmt: skip
    server = ConsoleServer(env.context())
    server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=server.url, verify=False) as client:
            r = _sign_in(client)
            assert r.status_code == 303
            cookie = r.headers["set-cookie"].lower()
            assert "secure" in cookie and "httponly" in cookie
            assert "max-age=31536000" in r.headers["strict-transport-security"]
            assert client.get("/actions").status_code == 200
    finally:
        server.stop()
        env.store.dispose()


def test_plain_http_and_a_busy_port(tmp_path: Path) -> None:
    env = make_console_env(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", n=5)
    server = ConsoleServer(env.context())
    server.start()
    try:
        with httpx.Client(base_url=server.url) as client:
            assert _sign_in(client).status_code == 303
            assert "ACME-0000004" in client.get("/actions").text
        assert env.settings.console is not None
        opts = env.settings.console.model_copy(update={"port": server.port})
        busy = ConsoleServer(replace(env.context(), options=opts))
        with pytest.raises(ConsoleError, match="cannot listen"):
            busy.start()
    finally:
        server.stop()
        env.store.dispose()


def test_the_daemon_serves_the_console_and_schedules_its_reports(tmp_path: Path) -> None:
    from returnsd.daemon import Daemon

    env = make_console_env(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", n=5)
    daemon = Daemon(env.settings, env.store)
    daemon.start()
    try:
        assert daemon.scheduler.get_job("reports") is not None
        with httpx.Client(base_url=daemon.console.url) as client:
            assert _sign_in(client).status_code == 303
    finally:
        daemon.stop()
        env.store.dispose()
    assert daemon.console is None
