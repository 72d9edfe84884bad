"""Fixtures for the end-to-end tests in headless Chromium (Debian's, driven by Playwright).

Never ``playwright install``: the browser is the system's (``require_service``). One
browser per session, one context per simulated person; a gateway of their own with a
presence timeout long enough that a 1 s poll never flaps.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from switchboard_client import Api
from tests.browser.pages import ChatPage
from tests.browser.proxy import Nginx
from tests.servers import GatewayServer
from tests.services import require_service

# The flags scripts/check_browser.py proved on these machines (no sandbox in a
# container, no GPU, no background traffic).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "password123"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def chromium() -> Iterator:
    executable = require_service("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                     headless=True, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def web_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    server = GatewayServer(tmp_path_factory.mktemp("web-gateway"), {
        "SWITCHBOARD_PRESENCE_TIMEOUT": "10",
        "SWITCHBOARD_PRESENCE_HEARTBEAT": "1",
    }).start()
    yield server
    server.stop()


@pytest.fixture
def user(web_gateway: GatewayServer) -> Callable[..., Api]:
    """A signed-up user (through the Python client), ready to log in from a page."""
    def make(prefix: str = "user", display_name: str | None = None,
             base_url: str | None = None) -> Api:
        api = Api(base_url or web_gateway.url)
        api.sign_up(f"{prefix}{next(_names)}", PASSWORD, display_name)
        api.password = PASSWORD  # type: ignore[attr-defined]
        return api
    return make


@pytest.fixture
def open_page(chromium) -> Iterator[Callable[..., ChatPage]]:  # type: ignore[no-untyped-def]
    """open_page(base_url, api, query="", init_script=None, viewport=None) -> ChatPage."""
    contexts = []

    def make(base_url: str, api: Api, query: str = "", init_script: str | None = None,
             viewport: dict | None = None, **context_args) -> ChatPage:
        context = chromium.new_context(viewport=viewport or {"width": 1280, "height": 800},
                                       **context_args)
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = ChatPage(context, base_url, query)
        page.log_in(api.user["username"], PASSWORD)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def nginx(web_gateway: GatewayServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Nginx]]:
    binary = require_service("nginx")
    started: list[Nginx] = []

    def make(*, buffering: bool) -> Nginx:
        proxy = Nginx(binary, Path(tmp_path_factory.mktemp("nginx")), web_gateway.port,
                      buffering=buffering).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()
