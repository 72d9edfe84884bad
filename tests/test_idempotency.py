"""A client_msg_id stores one message, however many times and ways it is retried."""

from __future__ import annotations

import threading

from switchboard_client import ApiError, open_transport


def test_concurrent_retries_store_exactly_one_message(new_user):
    alice, bob = new_user(), new_user()
    conv = alice.direct(bob.user_id)["id"]
    results: list[dict] = []
    errors: list[Exception] = []
    ws = open_transport("ws", alice)

    def retry_http() -> None:
        try:
            results.append(alice.send(conv, "only once", client_msg_id="retry-1"))
        except ApiError as err:  # pragma: no cover - reported by the assertion below
            errors.append(err)

    def retry_ws() -> None:
        reply = ws.send_message(conv, "only once", client_msg_id="retry-1")
        results.append(reply["data"]["message"])

    threads = [threading.Thread(target=retry_http) for _ in range(16)]
    threads += [threading.Thread(target=retry_ws) for _ in range(4)]
    barrier_start = [t.start() for t in threads]
    assert len(barrier_start) == 20
    for thread in threads:
        thread.join(30)
    ws.close()
    assert not errors
    assert len(results) == 20
    assert len({m["id"] for m in results}) == 1
    history = bob.messages(conv, limit=100)
    assert [m["client_msg_id"] for m in history] == ["retry-1"]


def test_retry_returns_original_and_status_200(new_user):
    alice, bob = new_user(), new_user()
    conv = alice.direct(bob.user_id)["id"]
    first = alice.request("POST", f"/v1/conversations/{conv}/messages",
                          json={"client_msg_id": "k", "text": "hello"}, expect=(201,))
    again = alice.request("POST", f"/v1/conversations/{conv}/messages",
                          json={"client_msg_id": "k", "text": "hello"}, expect=(200,))
    assert again == first


def test_same_client_msg_id_in_another_conversation_is_a_conflict(new_user):
    alice, bob, carol = new_user(), new_user(), new_user()
    one = alice.direct(bob.user_id)["id"]
    two = alice.direct(carol.user_id)["id"]
    alice.send(one, "hi", client_msg_id="dup")
    try:
        alice.send(two, "hi", client_msg_id="dup")
    except ApiError as err:
        assert err.status == 409 and err.code == "client_msg_id_reused"
    else:  # pragma: no cover
        raise AssertionError("expected 409")
    assert carol.messages(two) == []


def test_other_users_may_use_the_same_client_msg_id(new_user):
    alice, bob = new_user(), new_user()
    conv = alice.direct(bob.user_id)["id"]
    a = alice.send(conv, "from alice", client_msg_id="same")
    b = bob.send(conv, "from bob", client_msg_id="same")
    assert a["id"] != b["id"]
    assert [m["text"] for m in alice.messages(conv)] == ["from alice", "from bob"]


def test_retry_after_an_embedded_restart_returns_the_original(tmp_path):
    """The memory engine forgets its idempotency records on restart; SQLite does not."""
    from switchboard_client import Api
    from tests.conftest import unique_name
    from tests.servers import GatewayServer

    server = GatewayServer(tmp_path / "gw").start()
    try:
        alice, bob = Api(server.url), Api(server.url)
        alice.sign_up(unique_name(), "password123")
        bob.sign_up(unique_name(), "password123")
        conv = alice.direct(bob.user_id)["id"]
        first = alice.send(conv, "before restart", client_msg_id="survives")
        server.stop()
        server.start()
        again = alice.request("POST", f"/v1/conversations/{conv}/messages",
                              json={"client_msg_id": "survives", "text": "before restart"},
                              expect=(200,))
        assert again == first
        later = alice.send(conv, "after restart")
        assert later["seq"] > first["seq"]
        assert [m["client_msg_id"] for m in bob.messages(conv)] == ["survives",
                                                                    later["client_msg_id"]]
    finally:
        server.stop()
