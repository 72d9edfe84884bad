"""Scaled deployments for tests: gateway nodes on one Redis, PostgreSQL and an RQ worker.

Also the traffic used by the failover tests: receivers that roam between nodes through
``/v1/discover`` and resume from their cursors, and senders that retry with the same
``client_msg_id`` until a node acknowledges.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from storage.redis_conn import connect, delete_prefix
from switchboard_client import Api, ApiError, NodeDirectory, TransportClosed, open_transport
from switchboard_client.discovery import NoLiveNode
from tests.conftest import unique_name
from tests.servers import GatewayServer, WorkerProcess
from tests.services import require_service


def ensure_tables(database_url: str) -> None:
    """Create the SQL tables once, before any gateway: two workers of a node starting
    together on an empty PostgreSQL race on CREATE TABLE, and one of them dies."""
    from sqlalchemy import create_engine

    from storage import models  # noqa: F401 - registers the tables
    from storage.db import db

    engine = create_engine(database_url)
    try:
        db.metadata.create_all(engine)
    finally:
        engine.dispose()


class Deployment:
    """Gateway nodes (gunicorn, ``-w 2`` by default in Redis mode) sharing one Redis.

    ``redis_url`` is the engine's Redis (standalone or Cluster); RQ always uses the
    standalone test Redis, as a deployment beside a Cluster must.
    """

    def __init__(self, base: Path, redis_url: str, **settings: str) -> None:
        database_url = require_service("postgres")
        ensure_tables(database_url)
        self.base = base
        self.redis_url = redis_url
        self.prefix = f"sbc-{uuid.uuid4().hex[:10]}"
        self.env = {"SWITCHBOARD_REDIS_URL": redis_url,
                    "SWITCHBOARD_DATABASE_URL": database_url,
                    "SWITCHBOARD_SECRET_KEY": secrets.token_hex(32),
                    "SWITCHBOARD_REDIS_PREFIX": self.prefix,
                    "SWITCHBOARD_RQ_REDIS_URL": require_service("redis"),
                    # Quick discovery and recovery, so tests observe them in seconds.
                    "SWITCHBOARD_DISCOVERY_TTL": "3",
                    "SWITCHBOARD_REDIS_HEALTH_CHECK_INTERVAL": "1",
                    "SWITCHBOARD_REDIS_RECONNECT_MAX_BACKOFF": "0.5",
                    **{f"SWITCHBOARD_{k.upper()}": str(v) for k, v in settings.items()}}
        self.nodes: list[GatewayServer] = []
        self.worker = WorkerProcess(base, self.env).start()

    def node(self, **settings: str) -> GatewayServer:
        """Start one more node (one at a time: each checks the others' tables)."""
        env = {**self.env, **{f"SWITCHBOARD_{k.upper()}": str(v) for k, v in settings.items()}}
        server = GatewayServer(self.base / f"node{len(self.nodes)}", env, new_session=True)
        self.nodes.append(server)
        server.start()
        health = requests.get(server.url + "/v1/health", timeout=5).json()
        assert health["engine"] == "redis", health
        return server

    @property
    def a(self) -> GatewayServer:
        return self.nodes[0]

    @property
    def b(self) -> GatewayServer:
        return self.nodes[1]

    def user(self, node: GatewayServer) -> Api:
        api = Api(node.url)
        api.sign_up(unique_name("x"), "password123")
        return api

    @staticmethod
    def on(node: GatewayServer, api: Api) -> Api:
        """The same signed-in user, talking to another node."""
        other = Api(node.url, token=api.token)
        other.user = api.user
        return other

    def directory(self) -> NodeDirectory:
        return NodeDirectory(n.url for n in self.nodes)

    def stop(self) -> None:
        self.worker.stop()
        for server in self.nodes:
            server.stop()
        client = connect(self.redis_url, pool_size=4)
        try:
            delete_prefix(client, self.prefix + ":*")
        finally:
            client.close()


def message_ids(events: Iterable[dict[str, Any]]) -> list[str]:
    return [e["data"]["id"] for e in events if e.get("type") == "message.created"]


class Receiver(threading.Thread):
    """One user reading one transport; when its connection ends it asks discovery for a
    node other than the one it lost and resumes there from its cursor."""

    def __init__(self, api: Api, transport: str, directory: NodeDirectory,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"recv-{transport}-{api.user_id}")
        self.api = api
        self.transport = transport
        self.directory = directory
        self.halt = stop
        self.options: dict[str, Any] = {"wait": 5} if transport == "longpoll" else {}
        self.cursor: str | None = None
        self.events: list[dict[str, Any]] = []
        self.seqs: dict[str, int] = {}
        self.moves: list[tuple[float, str, str, str]] = []  # (monotonic, from, to, why)
        self.connected = threading.Event()
        self.problems: list[str] = []

    @property
    def url(self) -> str:
        return self.api.base_url

    def ids(self) -> list[str]:
        """Message ids de-duplicated, in order of first arrival."""
        return list(dict.fromkeys(message_ids(self.events)))

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                feed = open_transport(self.transport, self.api, cursor=self.cursor,
                                      **self.options)
            except (TransportClosed, ApiError, requests.RequestException) as err:
                self._move(f"connect: {err}")
                continue
            self.cursor = feed.cursor
            self.connected.set()
            try:
                while not self.halt.is_set():
                    batch = feed.next_batch(0.5)
                    self.events.extend(batch)
                    for e in batch:
                        if e.get("type") == "message.created":
                            self.seqs.setdefault(e["data"]["id"], e["data"]["seq"])
                    self.cursor = feed.cursor
            except TransportClosed as err:
                self.cursor = feed.cursor or self.cursor
                self._move(err.reason)
            finally:
                feed.close()

    def _move(self, why: str) -> None:
        lost = self.api.base_url
        try:
            to = self.directory.move(self.api, avoid=[lost])
        except NoLiveNode as err:
            self.problems.append(f"no node: {err}")
            time.sleep(0.3)
            return
        self.moves.append((time.monotonic(), lost, to, why))
        if to == lost:
            time.sleep(0.2)


class Sender(threading.Thread):
    """Sends numbered messages until stopped; each one is retried with its
    client_msg_id, moving node on network errors, until a node acknowledges it."""

    def __init__(self, api: Api, conversation_id: int, directory: NodeDirectory,
                 stop: threading.Event, name: str, pause: float = 0.05) -> None:
        super().__init__(daemon=True, name=f"send-{name}")
        self.api = api
        self.conversation_id = conversation_id
        self.directory = directory
        self.halt = stop
        self.label = name
        self.pause = pause
        self.acked: dict[str, str] = {}  # client_msg_id -> message id
        self.failures: list[tuple[int | str, Any]] = []  # (status or error, body)

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            cmid = f"{self.label}-{n}"
            self._send(cmid)
            n += 1
            time.sleep(self.pause)

    def _send(self, cmid: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                message = self.api.send(self.conversation_id, f"text {cmid}",
                                        client_msg_id=cmid)
                self.acked[cmid] = message["id"]
                return
            except requests.RequestException as err:
                self.failures.append(("network", str(err)))
                try:
                    self.directory.move(self.api, avoid=[self.api.base_url])
                except NoLiveNode:
                    pass
            except ApiError as err:
                self.failures.append((err.status, err.body))
                if err.status < 500:
                    raise
            time.sleep(0.2)
