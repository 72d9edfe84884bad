"""Push notifications in the embedded mode, against local receivers speaking the protocols.

The gateway is real (gunicorn's gevent worker, loopback HTTP); the push services are
local HTTP servers (tests/push_receivers.py) that verify webhook signatures with the
recipe in docs/push.md, and check VAPID and decrypt Web Push payloads like a push
service and a browser would.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from switchboard_client import Api, open_transport
from tests.conftest import unique_name
from tests.push_receivers import Receiver, Subscription, open_webpush_request
from tests.servers import ROOT, GatewayServer

WINDOW = 2.0  # coalescing window of these gateways, seconds
PUSH_ENV = {"push_window": WINDOW, "push_connection_linger": 0.3,
            "push_allow_insecure_targets": "true", "push_timeout": 1.0, "push_retries": 2,
            "push_retry_backoff": 0.1}


def webhook_recipe() -> Callable[..., bool]:
    """The verification snippet of docs/push.md, run exactly as published."""
    doc = (ROOT / "docs/push.md").read_text()
    code = re.search(r"<!-- webhook-recipe -->\s*```python\n(.*?)```", doc, re.S)
    assert code, "docs/push.md lost its webhook recipe"
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "docs/push.md", "exec"), namespace)  # noqa: S102
    return namespace["verify_switchboard_webhook"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def push_gateway(make_gateway) -> GatewayServer:  # type: ignore[no-untyped-def]
    return make_gateway(**PUSH_ENV)


def user(server: GatewayServer) -> Api:
    api = Api(server.url)
    api.sign_up(unique_name("push"), "password123")
    return api


def add_webhook(api: Api, url: str) -> dict:
    return api.request("POST", "/v1/devices", json={"kind": "webhook", "url": url})


def quiet_for(receiver: Receiver, count: int, seconds: float) -> int:
    """Wait ``seconds`` and return how many requests arrived meanwhile beyond ``count``."""
    time.sleep(seconds)
    return receiver.count() - count


# --- the devices API (in-process) -----------------------------------------------------------

def _token(client, name: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    body = client.post("/v1/users", json={"username": name, "password": "password123"})
    return {"Authorization": f"Bearer {body.get_json()['token']}"}


def test_device_registration_is_strict_and_writes_nothing_on_bad_input(client) -> None:
    alice, bob = _token(client, "pushalice"), _token(client, "pushbob")
    good = Subscription("https://push.example.com/wpush/abc").to_json()
    keys = good["keys"]
    bad_bodies = [
        {}, {"kind": "fcm"}, {"kind": "webpush"}, {"kind": "webpush", "subscription": "x"},
        {"kind": "webpush", "subscription": {**good, "keys": {"p256dh": keys["p256dh"]}}},
        {"kind": "webpush", "subscription": {**good, "keys": {**keys, "auth": "AAAA"}}},
        {"kind": "webpush", "subscription": {**good, "keys": {**keys, "p256dh": "B" * 87}}},
        {"kind": "webpush", "subscription": {**good, "keys": {**keys, "p256dh": "!!"}}},
        {"kind": "webpush", "subscription": {**good, "endpoint": "http://push.example.com/"}},
        {"kind": "webpush", "subscription": {**good, "endpoint": "https://127.0.0.1/x"}},
        {"kind": "webpush", "subscription": {**good, "endpoint": "https://10.1.2.3/x"}},
        {"kind": "webpush", "subscription": {**good, "endpoint": "https://localhost/x"}},
        {"kind": "webpush", "subscription": {**good, "endpoint": 5}},
        {"kind": "webpush", "subscription": {**good, "expirationTime": "soon"}},
        {"kind": "webpush", "subscription": {**good, "extra": 1}},
        {"kind": "webpush", "subscription": good, "url": "https://x.example/"},
        {"kind": "webhook"}, {"kind": "webhook", "url": "ftp://example.com/"},
        {"kind": "webhook", "url": "https://user:pw@example.com/"},
        {"kind": "webhook", "url": "https://example.com/" + "a" * 2100},
        {"kind": "webhook", "url": "https://exa mple.com/"},
        {"kind": "webhook", "url": "https://example.com:99999/"},
        {"kind": "webhook", "url": "https://example.com/", "label": ""},
        {"kind": "webhook", "url": "https://example.com/", "label": 7},
    ]
    for body in bad_bodies:
        response = client.post("/v1/devices", json=body, headers=alice)
        assert 400 <= response.status_code < 500, (body, response.get_json())
        assert set(response.get_json()["error"]) >= {"code", "message"}
    assert client.get("/v1/devices", headers=alice).get_json() == {"devices": []}

    created = client.post("/v1/devices", json={"kind": "webpush", "subscription": good,
                                               "label": "laptop"}, headers=alice)
    assert created.status_code == 201 and "secret" not in created.get_json()
    again = client.post("/v1/devices", json={"kind": "webpush", "subscription": good},
                        headers=alice)
    assert again.status_code == 200 and again.get_json()["id"] == created.get_json()["id"]
    hook = client.post("/v1/devices", json={"kind": "webhook",
                                            "url": "https://hooks.example.com/sb"},
                       headers=alice).get_json()
    assert len(hook["secret"]) >= 32
    listed = client.get("/v1/devices", headers=alice).get_json()["devices"]
    assert [d["kind"] for d in listed] == ["webpush", "webhook"]
    assert all("secret" not in d for d in listed)  # shown once, at registration
    assert client.delete(f"/v1/devices/{hook['id']}", headers=bob).status_code == 404
    assert client.delete(f"/v1/devices/{hook['id']}", headers=alice).status_code == 204
    assert client.delete(f"/v1/devices/{hook['id']}", headers=alice).status_code == 404
    # The same browser subscribed by another user moves to that user.
    moved = client.post("/v1/devices", json={"kind": "webpush", "subscription": good},
                        headers=bob)
    assert moved.status_code == 201
    assert client.get("/v1/devices", headers=alice).get_json() == {"devices": []}
    key = client.get("/v1/push/vapid-public-key", headers=alice).get_json()["public_key"]
    assert re.fullmatch(r"B[A-Za-z0-9_-]{86}", key)  # 65-byte uncompressed P-256 point


def test_device_count_is_capped(client) -> None:
    alice = _token(client, "pushcap")
    cap = client.application.extensions["switchboard"].settings.max_devices_per_user
    for i in range(cap):
        assert client.post("/v1/devices", json={"kind": "webhook",
                                                "url": f"https://h.example.com/{i}"},
                           headers=alice).status_code == 201
    over = client.post("/v1/devices", json={"kind": "webhook",
                                            "url": "https://h.example.com/over"}, headers=alice)
    assert over.status_code == 422 and over.get_json()["error"]["code"] == "too_many_devices"


def test_mute_is_validated_and_needs_membership(client) -> None:
    alice, bob, carol = (_token(client, n) for n in ("mutea", "muteb", "mutec"))
    bob_id = client.get("/v1/users/me", headers=bob).get_json()["id"]
    conv = client.post("/v1/conversations", json={"kind": "direct", "user_id": bob_id},
                       headers=alice).get_json()["id"]
    for body in ({}, {"muted": "yes"}, {"muted": 1}, {"muted": True, "title": "x"}):
        assert client.patch(f"/v1/conversations/{conv}", json=body,
                            headers=alice).status_code == 400
    assert client.patch(f"/v1/conversations/{conv}", json={"muted": True},
                        headers=carol).status_code == 403
    answer = client.patch(f"/v1/conversations/{conv}", json={"muted": True}, headers=alice)
    assert answer.status_code == 200 and answer.get_json()["muted"] is True
    # The setting is the member's own: listed for alice, not for bob.
    mine = client.get("/v1/conversations", headers=alice).get_json()["conversations"]
    theirs = client.get("/v1/conversations", headers=bob).get_json()["conversations"]
    assert [c["muted"] for c in mine if c["id"] == conv] == [True]
    assert [c["muted"] for c in theirs if c["id"] == conv] == [False]


def test_vapid_key_is_generated_once_and_kept(tmp_path) -> None:
    from config import Settings
    from workers.push_vapid import KEY_FILE, load_vapid, public_key

    settings = Settings(data_dir=str(tmp_path))
    first = public_key(load_vapid(settings))
    assert public_key(load_vapid(settings)) == first  # read back, not regenerated
    (tmp_path / KEY_FILE).write_text("-----BEGIN PRIVATE KEY-----\nbroken\n")
    with pytest.raises(RuntimeError, match="unreadable"):
        load_vapid(settings)  # never replaced behind the operator's back


# --- end to end over real HTTP ---------------------------------------------------------------

def test_webhook_is_signed_and_verified_with_the_documented_recipe(push_gateway, receiver):
    verify = webhook_recipe()
    alice, bob = user(push_gateway), user(push_gateway)
    device = add_webhook(bob, receiver.url())
    conv = alice.direct(bob.user_id)["id"]
    sent = alice.send(conv, "Lunch at noon? " + "é" * 300)
    [request] = receiver.wait_for(1, 10)
    assert request.headers["Content-Type"] == "application/json"
    assert verify(device["secret"], request.headers, request.body)
    note = request.json()
    assert note["device_id"] == device["id"] and note["conversation_id"] == conv
    assert note["message_id"] == sent["id"] and note["sender_id"] == alice.user_id
    assert note["sender_name"] == alice.user["display_name"] and note["count"] == 1
    assert note["preview"] == ("Lunch at noon? " + "é" * 300)[:200]
    assert request.headers["X-Switchboard-Delivery"] == note["id"]

    # The recipe refuses a changed body, a moved timestamp, another secret, an old delivery.
    assert not verify(device["secret"], request.headers, request.body.replace(b"noon", b"nine"))
    moved = {**request.headers, "X-Switchboard-Timestamp": str(int(time.time()) + 1)}
    assert not verify(device["secret"], moved, request.body)
    assert not verify("another-secret", request.headers, request.body)
    from workers.push_webhook import sign

    old = str(int(time.time()) - 301)  # correctly signed, but five minutes ago
    replay = {"X-Switchboard-Timestamp": old,
              "X-Switchboard-Signature": sign(device["secret"], old, request.body)}
    assert not verify(device["secret"], replay, request.body)
    assert verify(device["secret"], replay, request.body, max_age=400)  # only age failed

    # Previews off: the next push carries no text at all.
    bob.request("PATCH", "/v1/users/me", json={"push_previews": False})
    time.sleep(WINDOW + 0.2)
    alice.send(conv, "secret plans")
    requests = receiver.wait_for(2, 10)
    assert len(requests) == 2 and verify(device["secret"], requests[1].headers,
                                         requests[1].body)
    assert "preview" not in requests[1].json() and b"secret plans" not in requests[1].body


def test_web_push_is_encrypted_and_vapid_signed_end_to_end(push_gateway, receiver):
    alice, bob = user(push_gateway), user(push_gateway)
    public_key = bob.request("GET", "/v1/push/vapid-public-key")["public_key"]
    subscription = Subscription(receiver.url("/wpush/" + unique_name("sub")))
    bob.request("POST", "/v1/devices", json={"kind": "webpush",
                                             "subscription": subscription.to_json()})
    group = alice.group("Team", [bob.user_id])["id"]
    sent = alice.send(group, "Standup moved to 10:30 ☕")
    [request] = receiver.wait_for(1, 10)
    assert request.path == subscription.endpoint.removeprefix(receiver.origin)
    note = open_webpush_request(request, subscription, public_key, receiver.origin)
    assert note["preview"] == "Standup moved to 10:30 ☕" and note["message_id"] == sent["id"]
    assert note["conversation_title"] == "Team" and note["user_id"] == bob.user_id
    assert request.headers["Topic"] == f"c{group}" and request.headers["Urgency"] == "high"
    assert b"Standup" not in request.body  # encrypted on the wire


def test_online_users_get_no_push_offline_users_do(push_gateway, receiver):
    alice, bob = user(push_gateway), user(push_gateway)
    add_webhook(bob, receiver.url())
    conv = alice.direct(bob.user_id)["id"]
    for transport in ("ws", "sse", "longpoll"):
        feed = open_transport(transport, bob, **({"wait": 1} if transport == "longpoll" else {}))
        try:
            sent = alice.send(conv, f"you are on {transport}")
            got = feed.wait_for(lambda e, s=sent: e.get("data", {}).get("id") == s["id"], 10)
            assert got is not None
            assert quiet_for(receiver, 0, 0.5) == 0, f"pushed while connected over {transport}"
        finally:
            feed.close()
    # The server notices a vanished client when a write fails (heartbeats every 1 s here;
    # the first after the close may still be buffered), then it lingers 0.3 s.
    time.sleep(4.0)
    alice.send(conv, "now you are away")
    assert len(receiver.wait_for(1, 10)) == 1


def test_a_burst_gives_one_push_per_window_with_the_count(make_gateway, receiver):
    window = 6.0  # room for 50 sends on a busy two-core machine
    gateway = make_gateway(**{**PUSH_ENV, "push_window": window})
    alice, bob = user(gateway), user(gateway)
    add_webhook(bob, receiver.url())
    conv = alice.direct(bob.user_id)["id"]
    start = time.monotonic()
    for i in range(50):
        alice.send(conv, f"burst {i}")
    assert time.monotonic() - start < window - 1, "the burst must fit in one window"
    first = receiver.wait_for(1, 5)
    assert quiet_for(receiver, 1, max(0.0, start + window - 0.3 - time.monotonic())) == 0
    time.sleep(max(0.0, start + window + 1.0 - time.monotonic()))  # claimed just after start
    assert len(first) == 1 and first[0].json()["preview"] == "burst 0"
    alice.send(conv, "after the window")
    requests = receiver.wait_for(2, 5)
    assert len(requests) == 2
    assert requests[1].json()["count"] == 50  # 49 coalesced + this one
    assert quiet_for(receiver, 2, 0.5) == 0


def test_muted_conversations_send_nothing(push_gateway, receiver):
    alice, bob = user(push_gateway), user(push_gateway)
    add_webhook(bob, receiver.url())
    muted = alice.group("Noisy", [bob.user_id])["id"]
    bob.request("PATCH", f"/v1/conversations/{muted}", json={"muted": True})
    for i in range(3):
        alice.send(muted, f"noise {i}")
    assert quiet_for(receiver, 0, 1.0) == 0
    direct = alice.direct(bob.user_id)["id"]  # the control: not muted, pushed
    alice.send(direct, "hello")
    [request] = receiver.wait_for(1, 10)
    assert request.json()["conversation_id"] == direct


def test_gone_target_is_removed_and_5xx_is_retried(push_gateway):
    gone, flaky = Receiver(statuses=(410,)), Receiver(statuses=(503, 502, 201))
    try:
        alice, bob = user(push_gateway), user(push_gateway)
        sub = Subscription(gone.url("/wpush/expired"))
        bob.request("POST", "/v1/devices", json={"kind": "webpush",
                                                 "subscription": sub.to_json()})
        kept = add_webhook(bob, flaky.url())
        alice.send(alice.direct(bob.user_id)["id"], "anyone there?")
        assert len(gone.wait_for(1, 10)) == 1
        retried = flaky.wait_for(3, 10)
        assert len(retried) == 3  # 503, 502, then taken
        assert len({r.headers["X-Switchboard-Delivery"] for r in retried}) == 1
        deadline = time.monotonic() + 5
        while len(bob.request("GET", "/v1/devices")["devices"]) > 1:
            assert time.monotonic() < deadline, "the 410 target was not removed"
            time.sleep(0.05)
        assert [d["id"] for d in bob.request("GET", "/v1/devices")["devices"]] == [kept["id"]]
        assert gone.count() == 1  # a 410 is not retried
    finally:
        gone.close()
        flaky.close()


def _latencies(sender: Api, feed: Any, conversation: int, count: int) -> list[float]:
    """Send-to-receive time of each of ``count`` messages at an online member's feed."""
    latencies = []
    for i in range(count):
        started = time.monotonic()
        sent = sender.send(conversation, f"m{i}")
        got = feed.wait_for(lambda e, s=sent: e.get("data", {}).get("id") == s["id"], 10)
        assert got is not None, f"m{i} never arrived"
        latencies.append(time.monotonic() - started)
        time.sleep(0.1)  # past the window: every message makes more pushes
    return latencies


def test_a_hanging_provider_does_not_delay_delivery_to_online_members(make_gateway):
    """Every push target hangs past the timeout; the online member's latency stays low."""
    hanging = Receiver(hang=30)
    gateway = make_gateway(**{**PUSH_ENV, "push_window": 0.05, "push_timeout": 3,
                              "push_concurrency": 4, "push_queue_size": 50})
    try:
        alice, carol = user(gateway), user(gateway)
        offline = [user(gateway) for _ in range(6)]
        group = alice.group("Busy", [carol.user_id, *(m.user_id for m in offline)])["id"]
        feed = open_transport("ws", carol)
        try:
            baseline = _latencies(alice, feed, group, 20)  # no push targets yet
            for member in offline:
                add_webhook(member, hanging.url())
            latencies = _latencies(alice, feed, group, 40)
        finally:
            feed.close()
        assert hanging.count() >= 4, "the provider was not even reached"
        median, worst = statistics.median(latencies), max(latencies)
        print(f"\nsend-to-receive, no push targets: median "
              f"{statistics.median(baseline) * 1000:.1f} ms, max {max(baseline) * 1000:.1f} ms;"
              f" every provider hanging: median {median * 1000:.1f} ms, p90 "
              f"{sorted(latencies)[35] * 1000:.1f} ms, max {worst * 1000:.1f} ms "
              f"({hanging.count()} pushes hanging)")
        assert median < 0.25 and worst < 1.0, latencies
    finally:
        hanging.close()


def test_a_hanging_provider_does_not_slow_sends(push_gateway):
    """The sender's own acknowledgement is not held up either (the queue never blocks)."""
    hanging = Receiver(hang=30)
    try:
        alice, bob = user(push_gateway), user(push_gateway)
        add_webhook(bob, hanging.url())
        conv = alice.direct(bob.user_id)["id"]
        timings = []
        for i in range(20):
            started = time.monotonic()
            alice.send(conv, f"s{i}")
            timings.append(time.monotonic() - started)
        assert hanging.wait_for(1, 5)
        assert max(timings) < 1.0 and statistics.median(timings) < 0.2, timings
    finally:
        threading.Thread(target=hanging.close, daemon=True).start()


def test_browser_push_files_are_served(client) -> None:
    for name in ("push.js", "sw.js"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        assert "javascript" in response.headers["Content-Type"]
        response.close()
    assert b"SwitchboardPush" in client.get("/static/push.js").data
