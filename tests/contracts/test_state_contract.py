"""SharedState contract: sequences, locks, single-use claims, rate limits."""

from __future__ import annotations

import gevent
import pytest


def test_next_seq_starts_from_floor_once(state):
    calls = []

    def floor() -> int:
        calls.append(1)
        return 41

    assert [state.next_seq(5, floor) for _ in range(3)] == [42, 43, 44]
    assert len(calls) == 1


def test_next_seq_is_unique_under_concurrency(state):
    results = []
    jobs = [gevent.spawn(lambda: results.append(state.next_seq(6, lambda: 0)))
            for _ in range(200)]
    gevent.joinall(jobs)
    assert sorted(results) == list(range(1, 201))


def test_lock_excludes(state):
    inside = []
    overlaps = []

    def worker(n: int) -> None:
        with state.lock("k"):
            if inside:
                overlaps.append(n)
            inside.append(n)
            gevent.sleep(0.001)
            inside.remove(n)

    gevent.joinall([gevent.spawn(worker, n) for n in range(20)])
    assert overlaps == []


def test_remember_recall_and_claim_once(state):
    assert state.recall("a") is None
    state.remember("a", "1", 60)
    assert state.recall("a") == "1"
    assert state.claim_once("t", 60) is True
    assert state.claim_once("t", 60) is False


def test_forget_drops_a_value(state):
    state.remember("gone", "1", 60)
    state.forget("gone")
    state.forget("never-there")
    assert state.recall("gone") is None


def test_remember_expires(state):
    state.remember("short", "x", 0.05)
    gevent.sleep(0.1)
    assert state.recall("short") is None


@pytest.mark.parametrize("burst", [1, 5])
def test_allow_is_a_token_bucket(state, burst):
    granted = [state.allow(f"r{burst}", 0.001, burst) for _ in range(burst + 3)]
    assert granted == [True] * burst + [False] * 3


def test_worker_id_in_range(state):
    assert 0 <= state.worker_id() < 1024
