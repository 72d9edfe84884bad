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


def test_a_burst_of_first_requests_does_not_exhaust_the_database_pool(make_gateway):
    """Each user's first request brings them online, which looks up their friends on a
    second database connection; a request must not hold its own while waiting for it,
    or a burst larger than the pool deadlocks it (30 s timeouts, 500s). PostgreSQL:
    its driver yields to other greenlets, SQLite's does not."""
    import secrets
    import threading

    from switchboard_client import Api
    from tests.services import require_service

    server = make_gateway(database_url=require_service("postgres"),
                          secret_key=secrets.token_hex(16))
    users = []
    for _ in range(90):
        api = Api(server.url, timeout=20)
        api.sign_up(f"burst{secrets.token_hex(5)}", "password123")
        users.append(api)
    statuses: list[int] = []
    start = threading.Barrier(len(users))

    def first_request(api: Api) -> None:
        start.wait()
        response = api.http.get(api.base_url + "/v1/users/me", headers=api.headers(),
                                timeout=20)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=first_request, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses.count(200) == len(users), sorted(set(statuses))
