"""Per-user connection cap on the live transports (real server)."""

from __future__ import annotations

import pytest

from switchboard_client import TransportClosed, open_transport


def test_live_connections_per_user_are_capped(make_gateway, new_user):
    server = make_gateway(max_connections_per_user=2)
    user = new_user(server)
    first, second = open_transport("sse", user), open_transport("ws", user)
    try:
        with pytest.raises(TransportClosed, match="429"):
            open_transport("sse", user)
        with pytest.raises(TransportClosed, match="429"):
            open_transport("ws", user)
        assert user.poll()["events"] == []  # plain polls hold no connection: not capped
    finally:
        first.close()
        second.close()
    # Closed connections free their slots.
    deadline_feed = None
    for _ in range(50):
        try:
            deadline_feed = open_transport("sse", user)
            break
        except TransportClosed:
            import time
            time.sleep(0.1)
    assert deadline_feed is not None
    deadline_feed.close()
