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


def test_a_late_heartbeat_never_moves_last_seen_back(presence):
    # Nodes' clocks disagree by a little: the newest heartbeat is what counts.
    presence.touch(7, 50_000)
    assert presence.touch_many([7, 8, 8], 45_000) == [8]  # once each, in any shard
    assert presence.status([7]) == {7: (True, 50_000)}
    assert presence.expire(74_000) == []
    assert presence.expire(75_001) == [(8, 45_000)]  # 7's 50 s counts, not its 45 s
    assert presence.expire(80_001) == [(7, 50_000)]
    assert presence.status([7]) == {7: (False, 50_000)}


def test_many_users_go_offline_together_each_with_their_own_last_seen(presence):
    users = list(range(100, 400))
    assert sorted(presence.touch_many(users, 1_000)) == users
    presence.touch_many(users[::3], 2_000)
    gone = presence.expire(40_000)
    assert gone == sorted((u, 2_000 if (u - 100) % 3 == 0 else 1_000) for u in users)
    assert presence.expire(40_000) == []
    status = presence.status(users)
    assert status[100] == (False, 2_000) and status[101] == (False, 1_000)
