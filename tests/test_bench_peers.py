"""The benchmark's peers behave like the servers they stand for (no timing checked)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bench.servers import FloorServer
from tests.services import require_service

pytestmark = pytest.mark.slow


def test_floor_long_poll_messages_go_to_the_newest_poll(tmp_path):
    # A poll parked by a client that went away (the previous run's) must not take the
    # subscriber's messages: the newest poll gets them, the stale one answers empty.
    server = FloorServer("floor", tmp_path, require_service("redis"), None).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        started = time.monotonic()
        first = requests.get(f"{base}/lp/u1?sub=7&wait=10", timeout=20)
        assert first.json() == [] and time.monotonic() - started < 5  # subscribed
        with ThreadPoolExecutor(2) as pool:
            stale = pool.submit(requests.get, f"{base}/lp/u1?sub=7&wait=10", timeout=20)
            time.sleep(0.5)
            newest = pool.submit(requests.get, f"{base}/lp/u1?sub=7&wait=10", timeout=20)
            time.sleep(0.5)
            assert requests.post(f"{base}/pub/u1", data=b"hello", timeout=5).text == "ok"
            assert newest.result().json() == ["hello"]
            assert stale.result().json() == []
    finally:
        server.stop()
