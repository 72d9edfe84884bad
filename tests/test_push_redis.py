"""Push notifications in Redis mode: RQ jobs served by real ``python -m workers`` processes.

Real Redis and PostgreSQL, gateways under gunicorn; the push targets are the local
receivers of tests/push_receivers.py.
"""

from __future__ import annotations

import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.redis_conn import connect, delete_prefix
from switchboard_client import Api, open_transport
from tests.conftest import unique_name
from tests.push_receivers import Receiver, Subscription, open_webpush_request
from tests.servers import GatewayServer, WorkerProcess
from tests.services import require_service

pytestmark = pytest.mark.redis


class PushDeployment:
    def __init__(self, base: Path, **settings: object) -> None:
        self.base = base
        self.prefix = f"sbpush-{uuid.uuid4().hex[:10]}"
        self.env = {"SWITCHBOARD_REDIS_URL": require_service("redis"),
                    "SWITCHBOARD_DATABASE_URL": require_service("postgres"),
                    "SWITCHBOARD_SECRET_KEY": secrets.token_hex(32),
                    "SWITCHBOARD_REDIS_PREFIX": self.prefix,
                    "SWITCHBOARD_PUSH_CONNECTION_LINGER": "0.3",
                    "SWITCHBOARD_PUSH_ALLOW_INSECURE_TARGETS": "true",
                    **{f"SWITCHBOARD_{k.upper()}": str(v) for k, v in settings.items()}}
        self.redis = connect(self.env["SWITCHBOARD_REDIS_URL"], pool_size=4)
        self.gateways: list[GatewayServer] = []
        self.workers: list[WorkerProcess] = []

    def gateway(self) -> GatewayServer:
        server = GatewayServer(self.base / f"gw{len(self.gateways)}", self.env).start()
        self.gateways.append(server)
        return server

    def worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.base, self.env).start()
        self.workers.append(worker)
        return worker

    def user(self, server: GatewayServer) -> Api:
        api = Api(server.url)
        api.sign_up(unique_name("rp"), "password123")
        return api

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in [*self.workers, *self.gateways])

    def stop(self) -> None:
        for process in [*self.workers, *self.gateways]:
            process.stop()
        delete_prefix(self.redis, self.prefix + ":*")
        self.redis.close()


@pytest.fixture
def deployment(tmp_path) -> Iterator[PushDeployment]:  # type: ignore[no-untyped-def]
    made: list[PushDeployment] = []

    def make(**settings: object) -> PushDeployment:
        d = PushDeployment(tmp_path, **settings)
        made.append(d)
        return d

    yield make  # type: ignore[misc]
    for d in made:
        d.stop()


def test_connections_on_one_node_suppress_pushes_sent_from_another(deployment):
    d = deployment(push_window=1)
    gw1, gw2 = d.gateway(), d.gateway()
    d.worker()
    receiver = Receiver()
    try:
        key = d.user(gw1).request("GET", "/v1/push/vapid-public-key")["public_key"]
        bob_on_1 = d.user(gw1)
        assert bob_on_1.request("GET", "/v1/push/vapid-public-key")["public_key"] == key
        alice = d.user(gw2)
        assert alice.request("GET", "/v1/push/vapid-public-key")["public_key"] == key
        subscription = Subscription(receiver.url("/wpush/" + unique_name("s")))
        bob_on_1.request("POST", "/v1/devices", json={"kind": "webpush",
                                                      "subscription": subscription.to_json()})
        conv = alice.direct(bob_on_1.user_id)["id"]
        feed = open_transport("sse", bob_on_1)  # connected to gw1; alice sends through gw2
        try:
            sent = alice.send(conv, "are you there?")
            assert feed.wait_for(lambda e: e.get("data", {}).get("id") == sent["id"], 10)
            time.sleep(1.5)
            assert receiver.count() == 0, "pushed to a user connected to another node"
        finally:
            feed.close()
        # The server notices the vanished stream when a heartbeat write fails (1 s apart
        # here; the first one after the close may still be buffered by the kernel).
        time.sleep(4.0)
        alice.send(conv, "gone?")
        [request] = receiver.wait_for(1, 15)
        # Signed by the worker with the key every gateway serves (one key, in Redis).
        note = open_webpush_request(request, subscription, key, receiver.origin)
        assert note["preview"] == "gone?" and note["count"] == 1  # online ones uncounted
    finally:
        receiver.close()
        if receiver.count() == 0:
            print(d.logs())


def test_worker_killed_mid_job_pushes_at_most_once_per_window(deployment):
    window = 10.0
    d = deployment(push_window=window, push_timeout=30, push_retries=0)
    gw = d.gateway()
    victim = d.worker()
    receiver = Receiver(hang=60)  # holds the first push: the worker is mid-job
    try:
        alice, bob = d.user(gw), d.user(gw)
        device = bob.request("POST", "/v1/devices", json={"kind": "webhook",
                                                          "url": receiver.url()})
        conv = alice.direct(bob.user_id)["id"]
        claimed_at = time.monotonic()
        alice.send(conv, "first")
        assert receiver.wait_for(1, 20), d.logs()
        victim.stop(signal.SIGKILL)
        receiver.hang = 0.0  # the service is fine again; the killed request stays open
        d.worker()
        alice.send(conv, "second, same window")
        count_key = f"{d.prefix}:{{u:{bob.user_id}}}:push-count"
        deadline = time.monotonic() + 8
        while d.redis.get(count_key) != "1":  # the new worker ran the job and coalesced it
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.05)
        time.sleep(max(0.0, claimed_at + window - 0.5 - time.monotonic()))
        assert receiver.count() == 1, "pushed twice in one window after a worker was killed"

        # The worker claimed the window a moment after claimed_at (queue, pick-up).
        time.sleep(max(0.0, claimed_at + window + 1.5 - time.monotonic()))
        alice.send(conv, "third, next window")
        requests = receiver.wait_for(2, 15)
        assert len(requests) == 2, d.logs()
        assert requests[1].json()["count"] == 2  # the coalesced second and this one
        assert requests[1].json()["device_id"] == device["id"]
        time.sleep(1.0)
        assert receiver.count() == 2  # the abandoned job was not run again
    finally:
        receiver.close()
