"""Shared fixtures: a real gateway over sockets, users on it, and an in-process app."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator

import pytest

from switchboard_client import Api
from tests.servers import TEST_ENV, GatewayServer

_names = itertools.count(1)


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}{next(_names)}_{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    server = GatewayServer(tmp_path_factory.mktemp("gateway")).start()
    yield server
    server.stop()


@pytest.fixture
def make_gateway(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., GatewayServer]]:
    """Start extra gateways with their own settings; stopped after the test."""
    started: list[GatewayServer] = []

    def make(**env: str) -> GatewayServer:
        server = GatewayServer(tmp_path_factory.mktemp("gw"), {
            f"SWITCHBOARD_{k.upper()}": str(v) for k, v in env.items()}).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def new_user(gateway: GatewayServer) -> Callable[..., Api]:
    def make(server: GatewayServer | None = None) -> Api:
        api = Api((server or gateway).url)
        api.sign_up(unique_name(), "password123")
        return api
    return make


@pytest.fixture
def app(tmp_path):  # type: ignore[no-untyped-def]
    """The Flask app in-process (test client): fast checks of validation and rules."""
    from config import Settings
    from gateway import create_app

    application = create_app(Settings.from_env({**TEST_ENV, "SWITCHBOARD_DATA_DIR": str(tmp_path)}))
    yield application
    application.extensions["switchboard"].close()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()
