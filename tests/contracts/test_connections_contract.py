"""ConnectionRegistry contract: who counts as connected for push, on every engine."""

from __future__ import annotations

import time


def test_open_counts_until_the_ttl_unless_renewed(registry):
    registry.open(1, "a")
    registry.open(2, "b")
    assert registry.live([1, 2, 3]) == {1, 2}
    time.sleep(0.6)
    registry.renew([(1, "a")])
    time.sleep(0.6)  # 1.2 s after open: only the renewed entry is left
    assert registry.live([1, 2]) == {1}


def test_a_closed_connection_lingers_then_stops_counting(registry):
    registry.open(4, "a")
    registry.open(4, "b")
    registry.close(4, "a")
    assert registry.live([4]) == {4}
    registry.close_many([(4, "b")])
    assert registry.live([4]) == {4}  # lingering
    time.sleep(0.45)
    assert registry.live([4]) == set()


def test_closing_what_is_not_open_registers_nothing(registry):
    registry.close(5, "never-opened")
    registry.close_many([(6, "never-opened")])
    assert registry.live([5, 6]) == set()
    registry.open(7, "a")
    time.sleep(1.1)  # lapsed (its process died without closing)
    registry.close(7, "a")  # a late close must not bring it back for the linger
    assert registry.live([7]) == set()


def test_live_of_nobody_is_empty(registry):
    assert registry.live([]) == set()


def test_renewal_keeps_a_connection_counting_past_several_ttls(registry):
    registry.open(8, "a")
    for _ in range(4):  # 2.4 s: past the entry's 1 s and the key's own expiry
        time.sleep(0.6)
        registry.renew([(8, "a")])
        assert registry.live([8]) == {8}
    registry.close(8, "a")
    time.sleep(0.45)
    assert registry.live([8]) == set()
