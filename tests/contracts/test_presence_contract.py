"""PresenceTracker contract: transitions once each, last_seen kept."""

from __future__ import annotations


def test_touch_reports_coming_online_once(presence):
    assert presence.touch(1, 1_000) is True
    assert presence.touch(1, 2_000) is False
    assert presence.status([1, 2]) == {1: (True, 2_000), 2: (False, None)}


def test_expire_after_timeout_once_and_keeps_last_seen(presence):
    presence.touch(1, 1_000)
    presence.touch(2, 20_000)
    assert presence.expire(25_000) == []  # within the 30 s timeout
    assert presence.expire(31_001) == [(1, 1_000)]
    assert presence.expire(32_000) == []
    assert presence.status([1]) == {1: (False, 1_000)}
    assert presence.touch(1, 40_000) is True  # back online: a new transition


def test_heartbeats_within_the_grace_period_never_flap(presence):
    presence.touch(3, 0)
    for t in range(5_000, 120_000, 5_000):
        assert presence.touch(3, t) is False
        assert presence.expire(t) == []


def test_touch_many_renews_together_and_reports_who_came_online(presence):
    presence.touch(4, 1_000)
    assert presence.touch_many([], 2_000) == []
    assert sorted(presence.touch_many([4, 5, 6], 20_000)) == [5, 6]
    assert presence.expire(35_000) == []  # 4 was renewed at 20 s, not left at 1 s
    assert presence.status([4, 5]) == {4: (True, 20_000), 5: (True, 20_000)}
    assert presence.touch_many([5], 21_000) == []
