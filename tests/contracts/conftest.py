from __future__ import annotations

import pytest

from storage.broker_memory import MemoryBroker
from storage.history_sql import SqlHistoryStore
from storage.presence_memory import MemoryPresence
from storage.state_memory import MemoryState

BROKERS = ["memory"]
HISTORIES = ["sqlite"]
PRESENCES = ["memory"]
STATES = ["memory"]


def _broker(kind: str, size: int):  # type: ignore[no-untyped-def]
    if kind == "memory":
        broker = MemoryBroker(size=size)
        return broker
    raise ValueError(kind)


@pytest.fixture(params=BROKERS)
def broker(request):  # type: ignore[no-untyped-def]
    b = _broker(request.param, 1000)
    yield b
    b.close()


@pytest.fixture(params=BROKERS)
def small_broker(request):  # type: ignore[no-untyped-def]
    b = _broker(request.param, 5)
    b.size = 5
    yield b
    b.close()


@pytest.fixture(params=HISTORIES)
def history(request, tmp_path):  # type: ignore[no-untyped-def]
    store = SqlHistoryStore(f"sqlite:///{tmp_path}/history.db")
    yield store
    store.close()


@pytest.fixture(params=PRESENCES)
def presence(request):  # type: ignore[no-untyped-def]
    return MemoryPresence(timeout=30.0)


@pytest.fixture(params=STATES)
def state(request):  # type: ignore[no-untyped-def]
    s = MemoryState()
    yield s
    s.close()
