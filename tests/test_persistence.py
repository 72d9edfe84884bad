"""The scaled mode's persistence: acked in Redis, written to history by RQ workers.

Real Redis, PostgreSQL and Cassandra; workers are real ``python -m workers`` processes.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.persist_drain import drop_sql, fresh_sql
from storage.cassandra_schema import apply_schema
from storage.history import HistoryStore
from storage.history_cassandra import CassandraHistoryStore
from storage.history_sql import SqlHistoryStore
from storage.persist_buffer import PersistBuffer
from storage.redis_conn import connect, delete_prefix
from switchboard_client import Api, open_transport
from tests.conftest import unique_name
from tests.contracts.cassandra_engines import TEST_REPLICATION, admin_session
from tests.servers import GatewayServer, WorkerProcess
from tests.services import require_service

pytestmark = pytest.mark.redis


class Deployment:
    """One gateway, its workers, and direct handles on Redis and the history store."""

    def __init__(self, base: Path, env: dict[str, str], history: HistoryStore) -> None:
        self.base = base
        self.env = env
        self.history = history
        self.gateway = GatewayServer(base / "gw", env).start()
        self.workers: list[WorkerProcess] = []
        self.redis = connect(env["SWITCHBOARD_REDIS_URL"], pool_size=4)
        self.buffer = PersistBuffer(self.redis, env["SWITCHBOARD_REDIS_PREFIX"],
                                    int(env.get("SWITCHBOARD_PERSIST_SHARDS", "4")))

    def worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.base, self.env).start()
        self.workers.append(worker)
        return worker

    def user(self) -> Api:
        api = Api(self.gateway.url)
        api.sign_up(unique_name("p"), "password123")
        return api

    def backlog(self) -> int:
        return sum(self.buffer.backlog().values())

    def wait_drained(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.backlog():
            if time.monotonic() > deadline:
                logs = "\n".join(w.log_tail() for w in self.workers)
                raise AssertionError(f"backlog {self.backlog()} not drained:\n{logs}")
            time.sleep(0.2)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.gateway.stop()
        delete_prefix(self.redis, self.env["SWITCHBOARD_REDIS_PREFIX"] + ":*")
        self.redis.close()
        self.history.close()


def _base_env(**extra: str) -> dict[str, str]:
    prefix = f"sbp-{uuid.uuid4().hex[:10]}"
    return {"SWITCHBOARD_REDIS_URL": require_service("redis"),
            "SWITCHBOARD_DATABASE_URL": require_service("postgres"),
            "SWITCHBOARD_SECRET_KEY": secrets.token_hex(32),
            "SWITCHBOARD_REDIS_PREFIX": prefix, "SWITCHBOARD_PERSIST_CLAIM_IDLE": "1",
            **extra}


@pytest.fixture
def sql_deployment(tmp_path) -> Iterator[Deployment]:  # type: ignore[no-untyped-def]
    # A schema of its own (the gateway, its workers and this test all connect with its
    # search_path), so rows another test or a benchmark left in the database cannot
    # collide with this deployment's ids. The history tables live in the same database
    # as the accounts, as in production.
    url = require_service("postgres")
    schema = f"p_{uuid.uuid4().hex[:12]}"
    scoped = fresh_sql(url, schema)
    env = _base_env(SWITCHBOARD_DATABASE_URL=scoped)
    history = SqlHistoryStore(scoped)
    deployment = Deployment(tmp_path, env, history)
    try:
        yield deployment
    finally:
        deployment.stop()
        drop_sql(url, schema)


def _cassandra_env(hosts: str, **extra: str) -> tuple[dict[str, str], CassandraHistoryStore]:
    keyspace = f"p_{uuid.uuid4().hex[:12]}"
    apply_schema(admin_session(hosts), keyspace, TEST_REPLICATION, 10 * 24 * 3600 * 1000)
    env = _base_env(SWITCHBOARD_CASSANDRA_HOSTS=hosts, SWITCHBOARD_CASSANDRA_KEYSPACE=keyspace,
                    **extra)
    return env, CassandraHistoryStore(hosts, keyspace=keyspace)


def send_many(api: Api, conversation_id: int, count: int, threads: int = 8) -> list[dict]:
    acked: list[dict] = []
    lock = threading.Lock()

    def run(offset: int) -> None:
        for i in range(offset, count, threads):
            message = api.send(conversation_id, f"m{i}", client_msg_id=f"k{i}")
            with lock:
                acked.append(message)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    return acked


def all_stored(history: HistoryStore, conversation_id: int) -> list:
    page = history.page(conversation_id, limit=100)
    stored = list(page)
    while page:
        page = history.page(conversation_id, before=page[0].id, limit=100)
        stored = page + stored
    return stored


def test_sends_are_readable_at_once_and_reach_history_through_workers(sql_deployment):
    d = sql_deployment
    alice, bob = d.user(), d.user()
    conv = alice.direct(bob.user_id)["id"]
    acked = send_many(alice, conv, 40)
    assert d.backlog() == 40  # no worker yet: durable in Redis only
    # A sender reads its own writes (and so does everyone) from the tail meanwhile.
    assert sorted(m["id"] for m in bob.messages(conv, limit=100)) == sorted(
        m["id"] for m in acked)
    assert d.history.page(conv, limit=100) == []
    d.worker()
    d.wait_drained(30)
    stored = all_stored(d.history, conv)
    assert sorted(str(m.id) for m in stored) == sorted(m["id"] for m in acked)
    assert [m.seq for m in stored] == list(range(1, 41))
    mark = d.history.watermarks(conv, [alice.user_id])[alice.user_id]
    assert mark.seq == 40  # the sender's read mark moved with persistence
    assert [m["id"] for m in bob.messages(conv, limit=100)] == [str(m.id) for m in stored]


@pytest.mark.cassandra
def test_worker_killed_mid_batch_loses_and_duplicates_nothing(tmp_path):
    hosts = require_service("cassandra")
    env, history = _cassandra_env(hosts, SWITCHBOARD_PERSIST_BATCH="25")
    d = Deployment(tmp_path, env, history)
    try:
        alice, bob = d.user(), d.user()
        conv = alice.direct(bob.user_id)["id"]
        acked = send_many(alice, conv, 600)
        total = d.backlog()
        assert total == 600
        victim = d.worker()
        deadline = time.monotonic() + 60
        while d.backlog() == total and time.monotonic() < deadline:
            time.sleep(0.005)
        victim.stop(signal.SIGKILL)  # mid-drain: its current batch stays pending
        left = d.backlog()
        assert 0 < left < total, "the worker should die part-way through"
        d.worker()
        d.wait_drained(90)
        stored = all_stored(history, conv)
        ids = [str(m.id) for m in stored]
        assert len(ids) == len(set(ids)) == 600
        assert set(ids) == {m["id"] for m in acked}
    finally:
        d.stop()


@pytest.mark.cassandra
@pytest.mark.slow
def test_history_outage_keeps_sends_and_delivery_going_then_drains(tmp_path):
    require_service("redis")
    from tests.cassandra_server import start_cassandra

    node = start_cassandra(tmp_path / "cass")
    port = node.hosts.rsplit(":", 1)[1]
    try:
        env, history = _cassandra_env(node.hosts)
        d = Deployment(tmp_path, env, history)
        try:
            d.worker()
            alice, bob = d.user(), d.user()
            conv = alice.direct(bob.user_id)["id"]
            feed = open_transport("sse", bob)
            before = send_many(alice, conv, 20, threads=2)
            d.wait_drained(30)
            _stop(node)  # stop the node but keep its data directory
            outage_start = time.monotonic()
            during: list[dict] = []
            while time.monotonic() - outage_start < 30:
                during.append(alice.send(conv, f"outage {len(during)}"))
                time.sleep(0.25)
            got = {e["data"]["id"] for e in feed.collect(len(before) + len(during), 30,
                                                         kind="message.created")}
            assert {m["id"] for m in before + during} <= got  # live delivery went on
            assert d.backlog() >= len(during) - 1  # nothing could be persisted
            _restart(node.directory, int(port))
            d.wait_drained(120)
            feed.close()
            stored = {str(m.id) for m in all_stored(history, conv)}
            assert stored == {m["id"] for m in before + during}
        finally:
            d.stop()
    finally:
        node.stop()


def _stop(node) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    from tests.cassandra_server import SCRIPT

    subprocess.run(["bash", str(SCRIPT), "stop", str(node.directory)], check=True,
                   capture_output=True, timeout=120)


def _restart(directory: Path, port: int) -> None:
    import subprocess

    from tests.cassandra_server import SCRIPT

    subprocess.run(["bash", str(SCRIPT), "start", str(directory), str(port)], check=True,
                   capture_output=True, timeout=300)
