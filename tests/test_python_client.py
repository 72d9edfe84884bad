"""The Python Client: falls back, reconnects, resumes and de-duplicates; and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from switchboard_client import Api, Client, TransportClosed
from tests.conftest import unique_name
from tests.servers import ROOT


def _texts(events: list[dict]) -> list[str]:
    return [e["data"]["text"] for e in events if e["type"] == "message.created"]


def _collect(client: Client, count: int, timeout: float = 30) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(_texts(got)) < count and time.monotonic() < deadline:
        got.extend(client.next_batch(min(5.0, deadline - time.monotonic())))
    return got


@pytest.mark.parametrize("transports", [("ws",), ("sse",), ("longpoll",), ("poll",)])
def test_client_reconnects_and_resumes_without_loss_or_duplicates(new_user, transports):
    alice, bob = new_user(), new_user()
    conversation_id = bob.direct(alice.user_id)["id"]
    with Client(alice, transports=transports, backoff=(0.1, 0.5)) as client:
        client.connect()
        bob.send(conversation_id, "one")
        assert _texts(_collect(client, 1)) == ["one"]
        # The link drops; two messages are sent while it is down.
        client.current.close()
        bob.send(conversation_id, "two")
        bob.send(conversation_id, "three")
        assert _texts(_collect(client, 2)) == ["two", "three"]
        # A second reader with an older cursor replays: the client drops what it saw.
        older = client.cursor
        client.current.close()
        client.cursor = None  # as if resuming from before "one"
        client.current = None
        client.connect()
        client.cursor = older
        bob.send(conversation_id, "four")
        assert _texts(_collect(client, 1)) == ["four"]
        assert client.transport == transports[0]


def test_client_send_is_idempotent_and_goes_over_websocket(new_user):
    alice, bob = new_user(), new_user()
    conversation_id = alice.direct(bob.user_id)["id"]
    with Client(alice, transports=("ws",)) as client:
        client.connect()
        first = client.send(conversation_id, "hi", client_msg_id="cli-1")
        again = client.send(conversation_id, "hi", client_msg_id="cli-1")
        assert first["id"] == again["id"]
        assert [m["text"] for m in bob.messages(conversation_id)] == ["hi"]
        # Its own message does not come back as new: it was acknowledged already.
        events = client.next_batch(1.0)
        assert _texts(events) == []


def test_client_gives_up_on_a_revoked_session(new_user):
    alice = new_user()
    with Client(alice, transports=("longpoll",)) as client:
        client.connect()
        alice.log_out()
        with pytest.raises(TransportClosed):
            for _ in range(5):
                client.next_batch(2.0)


def test_client_behind_buffering_proxy_settles_on_long_poll(gateway, new_user, tmp_path):
    from tests.browser.proxy import Nginx
    from tests.services import require_service

    proxy = Nginx(require_service("nginx"), tmp_path, gateway.port, buffering=True).start()
    try:
        alice = Api(proxy.url)
        alice.sign_up(unique_name(), "password123")
        bob = new_user()
        conversation_id = bob.direct(alice.user_id)["id"]
        alice.http.headers["Accept-Encoding"] = "gzip"  # what makes nginx compress and hold
        with Client(alice, ready_timeout=3) as client:
            client.connect()
            assert client.transport == "longpoll"
            assert client.history == [(None, "longpoll", "fallback")]
            bob.send(conversation_id, "through the proxy")
            assert _texts(_collect(client, 1)) == ["through the proxy"]
    finally:
        proxy.stop()


def _cli(url: str, *args: str, token: str | None = None, timeout: float = 60) -> str:
    env = {**os.environ, "SWITCHBOARD_URL": url}
    if token:
        env["SWITCHBOARD_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "switchboard_client", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cli_signup_direct_send_follow(gateway, tmp_path: Path):
    alice, bob = unique_name("cli"), unique_name("cli")
    alice_token = _cli(gateway.url, "signup", alice, "password123")
    bob_token = _cli(gateway.url, "signup", bob, "password123")
    conversation_id = _cli(gateway.url, "direct", bob, token=alice_token)
    follower = subprocess.Popen(
        [sys.executable, "-m", "switchboard_client", "follow", "--transport", "sse",
         "--count", "1", "--timeout", "30"],
        cwd=ROOT, env={**os.environ, "SWITCHBOARD_URL": gateway.url,
                       "SWITCHBOARD_TOKEN": bob_token},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # let it connect; it resumes from its cursor anyway
        _cli(gateway.url, "send", conversation_id, "hello from the CLI", token=alice_token)
        out, err = follower.communicate(timeout=40)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(5)
    assert follower.returncode == 0, err
    assert "# transport: sse" in err
    # The conversation.created event may come first; the message must be there.
    assert "hello from the CLI" in out
    listing = _cli(gateway.url, "conversations", token=bob_token)
    assert alice in listing and "unread 1" in listing


class _FakeStream:
    """A response whose body is ``chunks``: SSE frames exactly as the gateway writes them."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.raw = self
        self.chunks = chunks

    def stream(self, _amount: object, decode_content: bool) -> list[bytes]:
        return self.chunks

    def close(self) -> None:
        pass


def test_sse_hands_over_events_that_came_before_the_servers_close():
    """A drain's ``close`` frame can arrive in the same read as the last events: they
    must still reach the caller, and the cursor must not skip past them unseen."""
    from switchboard_client.transports import SSETransport

    def frame(payload: str, event_id: str | None = None) -> bytes:
        return ((f"id: {event_id}\n" if event_id else "") + f"data: {payload}\n\n").encode()

    message = '{"id": "1:7", "type": "message.created", "data": {"id": "42", "seq": 7}}'
    body = (frame('{"id": "1:6", "type": "ready", "data": {"cursor": "1:6"}}', "1:6")
            + frame(message, "1:7") + frame('{"type": "close", "data": {"reason": "draining"}}'))
    sse = SSETransport(None, cursor="1:6")  # type: ignore[arg-type]
    sse._response = _FakeStream([body[:17], body[17:]])  # type: ignore[assignment]
    sse._read_loop()
    sse._await_ready()
    assert [e["data"]["id"] for e in sse.next_batch(1)] == ["42"]
    assert sse.cursor == "1:7"
    with pytest.raises(TransportClosed) as closed:
        sse.next_batch(1)
    assert closed.value.reason == "draining"
    assert sse.cursor == "1:7"
