"""Engine fixtures for the contract suites: every implementation of each role.

Redis- and Cassandra-backed implementations join these parameter lists when their
servers are available (see tests/conftest.py for how the test command starts them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent


class Recorder:
    """A Broker listener that records what reached this process."""

    def __init__(self) -> None:
        self.woken: set[int] = set()
        self.appended: list[Any] = []
        self.ephemeral: list[tuple[int, dict[str, Any]]] = []

    def on_appended(self, events) -> None:  # type: ignore[no-untyped-def]
        events = list(events)
        self.appended.extend(events)
        self.woken.update(e.user_id for e in events)

    def on_wake(self, user_ids) -> None:  # type: ignore[no-untyped-def]
        self.woken.update(user_ids)

    def on_ephemeral(self, user_ids, payload) -> None:  # type: ignore[no-untyped-def]
        self.ephemeral.extend((u, payload) for u in user_ids)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("listener was not called in time")
            gevent.sleep(0.01)
