"""What the load generator drives: Switchboard and its peers behind one small interface.

A target knows how to make users and conversations, how to hold one live connection per
user on a transport, and how to send. Every delivered message text goes to
``on_text(user, text)``; the load generator does all the accounting.

Peers have no accounts: a "conversation" there is a channel (1:1: the peer's own
channel; group: one channel the members subscribe to, fanned out by the server).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.wire import HttpConnection, HttpError, HttpPool, SseParser, WebSocketClient, open_stream

OnText = Callable[["User", str], None]


@dataclass(eq=False)
class User:
    uid: int
    token: str = ""
    channels: list[str] = field(default_factory=list)  # peers: what this user hears


@dataclass
class Conv:
    id: Any
    members: list[User]


class Connection:
    """One live subscription; ``task`` reads until closed."""

    def __init__(self, user: User, transport: str) -> None:
        self.user = user
        self.transport = transport
        self.task: asyncio.Task | None = None
        self.cursor: str | None = None
        self.ws: WebSocketClient | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.http: HttpConnection | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.refs = itertools.count(1)
        self.closed = False
        self.ready = asyncio.get_running_loop().create_future()

    def close(self) -> None:
        self.closed = True
        if self.task:
            self.task.cancel()
        if self.ws:
            self.ws.close()
        if self.writer:
            self.writer.close()
        if self.http:
            self.http.close()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("closed"))


class Target:
    name = "target"
    transports: tuple[str, ...] = ()

    def __init__(self, port: int, pool_size: int = 32, poll_interval: float = 1.0) -> None:
        self.port = port
        self.pool = HttpPool(port, pool_size)
        self.poll_interval = poll_interval
        self.retried = 0  # polls answered 408/429/5xx and asked again (Switchboard's)

    async def make_users(self, count: int, concurrency: int = 32,
                         progress: Callable[[int], None] | None = None) -> list[User]:
        return [User(uid=i) for i in range(1, count + 1)]

    async def direct(self, a: User, b: User) -> Conv:
        b.channels.append(f"u{b.uid}")
        a.channels.append(f"u{a.uid}")
        return Conv(id=(a.uid, b.uid), members=[a, b])

    async def group(self, number: int, members: list[User]) -> Conv:
        for user in members:
            user.channels.append(f"g{number}")
        return Conv(id=f"g{number}", members=members)

    def channel_for(self, conv: Conv, sender: User) -> str:
        if isinstance(conv.id, tuple):
            other = conv.id[1] if sender.uid == conv.id[0] else conv.id[0]
            return f"u{other}"
        return str(conv.id)

    def sub_path(self, user: User) -> str:
        return ",".join(sorted(set(user.channels)) or [f"u{user.uid}"])

    async def connect(self, user: User, transport: str, on_text: OnText,
                      resume: Connection | None = None) -> Connection:
        raise NotImplementedError

    async def send(self, conn: Connection, conv: Conv, key: str, text: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        self.pool.close()


def _watch(conn: Connection, coro: Any) -> None:
    async def run() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - recorded, the reader just ends
            if not conn.ready.done():
                conn.ready.set_exception(err)
        finally:
            for fut in conn.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection ended"))
    conn.task = asyncio.get_running_loop().create_task(run())


# --------------------------------------------------------------------- Switchboard


class Switchboard(Target):
    name = "switchboard"
    transports = ("ws", "sse", "longpoll", "poll")

    async def make_users(self, count: int, concurrency: int = 32,
                         progress: Callable[[int], None] | None = None) -> list[User]:
        users: list[User | None] = [None] * count
        nonce = os.urandom(3).hex()
        counter = itertools.count()
        done = 0

        async def worker() -> None:
            nonlocal done
            for i in iter(lambda: next(counter), None):
                if i >= count:
                    return
                body = await self.pool.json("POST", "/v1/users", {
                    "username": f"b{nonce}_{i}", "password": "bench-password"})
                users[i] = User(uid=body["user"]["id"], token=body["token"])
                done += 1
                if progress and done % 500 == 0:
                    progress(done)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return [u for u in users if u is not None]

    def _auth(self, user: User) -> dict[str, str]:
        return {"Authorization": f"Bearer {user.token}"}

    async def direct(self, a: User, b: User) -> Conv:
        body = await self.pool.json("POST", "/v1/conversations",
                                    {"kind": "direct", "user_id": b.uid}, self._auth(a))
        return Conv(id=body["id"], members=[a, b])

    async def group(self, number: int, members: list[User]) -> Conv:
        owner = members[0]
        body = await self.pool.json("POST", "/v1/conversations", {
            "kind": "group", "title": f"bench group {number}",
            "member_ids": [u.uid for u in members[1:]]}, self._auth(owner))
        return Conv(id=body["id"], members=members)

    def _deliver(self, conn: Connection, event: dict, on_text: OnText) -> None:
        if "id" in event:
            conn.cursor = event["id"]
        kind = event.get("type")
        if kind == "message.created":
            on_text(conn.user, event["data"]["text"])
        elif kind == "ready" and not conn.ready.done():
            conn.ready.set_result(None)
        elif kind in ("ack", "error"):
            fut = conn.pending.pop(event.get("ref"), None)
            if fut and not fut.done():
                if kind == "ack":
                    fut.set_result(event)
                else:
                    fut.set_exception(RuntimeError(str(event.get("data"))))

    async def connect(self, user: User, transport: str, on_text: OnText,
                      resume: Connection | None = None) -> Connection:
        conn = Connection(user, transport)
        conn.cursor = resume.cursor if resume else None
        # As the SDK does: a connection is not handed back its client's own sends.
        query = f"?own_prefix={self._send_prefix(user)}"
        query += f"&cursor={conn.cursor}" if conn.cursor else ""
        if transport == "ws":
            conn.ws = await WebSocketClient.connect(self.port, "/v1/events/ws" + query,
                                                    self._auth(user))

            async def read_ws() -> None:
                while True:
                    text = await conn.ws.receive()
                    if text is None:
                        return
                    self._deliver(conn, json.loads(text), on_text)
            _watch(conn, read_ws())
        elif transport == "sse":
            reader, conn.writer, status, head = await open_stream(
                self.port, "/v1/events/stream" + query, self._auth(user))
            if status != 200:
                conn.writer.close()
                raise HttpError(status, await reader.read(500))

            async def read_sse() -> None:
                from bench.wire import iter_body
                parser = SseParser()
                async for chunk in iter_body(reader, head):
                    for _, data in parser.feed(chunk):
                        self._deliver(conn, json.loads(data), on_text)
            _watch(conn, read_sse())
        else:
            conn.http = HttpConnection(self.port)
            if conn.cursor is None:
                resp = await conn.http.request("GET", "/v1/events", self._auth(user))
                if resp.status != 200:
                    raise HttpError(resp.status, resp.body)
                conn.cursor = resp.json()["cursor"]
            # Live from here: every event after this cursor reaches the next answer.
            conn.ready.set_result(None)
            wait = 25 if transport == "longpoll" else 0

            # As the SDK does: a long-poll is not woken for this client's own sends.
            own = f"&own_prefix={self._send_prefix(user)}" if wait else ""

            async def read_polls() -> None:
                failures = 0
                while True:
                    resp = await conn.http.request(
                        "GET", f"/v1/events?cursor={conn.cursor}&wait={wait}&limit=500{own}",
                        self._auth(user))
                    if resp.status in (408, 429) or resp.status >= 500:
                        # As the SDK does: an overloaded server's answer is retried with
                        # the same cursor after a doubling backoff, not the end of a client.
                        failures += 1
                        self.retried += 1
                        await asyncio.sleep(min(15.0, 0.5 * 2 ** (failures - 1)))
                        continue
                    if resp.status != 200:
                        raise HttpError(resp.status, resp.body)
                    failures = 0
                    body = resp.json()
                    for event in body["events"]:
                        self._deliver(conn, event, on_text)
                    conn.cursor = body["cursor"]
                    if wait == 0:
                        await asyncio.sleep(self.poll_interval)
            _watch(conn, read_polls())
        await conn.ready
        return conn

    @staticmethod
    def _send_prefix(user: User) -> str:
        return f"u{user.uid}-"

    async def send(self, conn: Connection, conv: Conv, key: str, text: str) -> None:
        client_msg_id = self._send_prefix(conn.user) + key
        if conn.transport == "ws" and conn.ws is not None:
            ref = next(conn.refs)
            fut = asyncio.get_running_loop().create_future()
            conn.pending[ref] = fut
            conn.ws.send_json({"type": "send", "ref": ref, "conversation_id": conv.id,
                               "client_msg_id": client_msg_id, "text": text})
            await fut
            return
        await self.pool.json("POST", f"/v1/conversations/{conv.id}/messages",
                             {"client_msg_id": client_msg_id, "text": text},
                             self._auth(conn.user))


# --------------------------------------------------------------------- floor


class Floor(Target):
    """bench/peers/floor_app.py: Flask + gevent + Redis pub/sub, no chat semantics."""

    name = "floor"
    transports = ("ws", "sse", "longpoll", "poll")

    async def connect(self, user: User, transport: str, on_text: OnText,
                      resume: Connection | None = None) -> Connection:
        conn = Connection(user, transport)
        chans = self.sub_path(user)
        if transport == "ws":
            conn.ws = await WebSocketClient.connect(self.port, f"/ws/{chans}")

            async def read_ws() -> None:
                while True:
                    text = await conn.ws.receive()
                    if text is None:
                        return
                    if text == "ready":
                        conn.ready.set_result(None)
                    else:
                        on_text(user, text)
            _watch(conn, read_ws())
        elif transport == "sse":
            reader, conn.writer, status, head = await open_stream(self.port, f"/sse/{chans}")

            async def read_sse() -> None:
                from bench.wire import iter_body
                parser = SseParser()
                async for chunk in iter_body(reader, head):
                    for _, data in parser.feed(chunk):
                        if data == "ready":
                            conn.ready.set_result(None)
                        else:
                            on_text(user, data)
            _watch(conn, read_sse())
        else:
            conn.http = HttpConnection(self.port)
            wait = 25 if transport == "longpoll" else 0

            async def read_polls() -> None:
                while True:
                    # The first poll only subscribes (answered at once), so connecting
                    # never waits out a long-poll on a subscriber an earlier run made.
                    now = wait if conn.ready.done() else 0
                    resp = await conn.http.request(
                        "GET", f"/lp/{chans}?sub={user.uid}&wait={now}")
                    if resp.status != 200:
                        raise HttpError(resp.status, resp.body)
                    if not conn.ready.done():
                        conn.ready.set_result(None)
                    for text in resp.json():
                        on_text(user, text)
                    if wait == 0:
                        await asyncio.sleep(self.poll_interval)
            _watch(conn, read_polls())
        await conn.ready
        return conn

    async def send(self, conn: Connection, conv: Conv, key: str, text: str) -> None:
        resp = await self.pool.request("POST", f"/pub/{self.channel_for(conv, conn.user)}",
                                       {"Content-Type": "text/plain"}, text.encode())
        if resp.status != 200:
            raise HttpError(resp.status, resp.body)


# --------------------------------------------------------------------- nchan


class Nchan(Target):
    """nginx + nchan: ``/pub/<channel>`` publisher; multiplexed subscribers ``/sub/<a,b>``
    (WebSocket, EventSource), ``/lp/<a,b>`` (long-poll) and ``/poll/<a,b>``."""

    name = "nchan"
    transports = ("ws", "sse", "longpoll", "poll")

    async def connect(self, user: User, transport: str, on_text: OnText,
                      resume: Connection | None = None) -> Connection:
        conn = Connection(user, transport)
        chans = self.sub_path(user)
        if transport == "ws":
            conn.ws = await WebSocketClient.connect(self.port, f"/sub/{chans}")
            conn.ready.set_result(None)

            async def read_ws() -> None:
                while True:
                    text = await conn.ws.receive()
                    if text is None:
                        return
                    on_text(user, text)
            _watch(conn, read_ws())
        elif transport == "sse":
            reader, conn.writer, status, head = await open_stream(
                self.port, f"/sub/{chans}", {"Accept": "text/event-stream"})
            if status != 200:
                raise HttpError(status, b"")
            conn.ready.set_result(None)

            async def read_sse() -> None:
                from bench.wire import iter_body
                parser = SseParser()
                async for chunk in iter_body(reader, head):
                    for _, data in parser.feed(chunk):
                        on_text(user, data)
            _watch(conn, read_sse())
        else:
            conn.http = HttpConnection(self.port)
            # Subscribe from "now": nchan's cursor is Last-Modified + Etag.
            since = {"If-Modified-Since": "Thu, 01 Jan 2037 00:00:00 GMT"}
            base = "/poll" if transport == "poll" else "/lp"
            state = {"lm": None, "etag": None}

            async def read_polls() -> None:
                first = True
                while True:
                    headers = {}
                    if state["lm"]:
                        headers["If-Modified-Since"] = state["lm"]
                        headers["If-None-Match"] = state["etag"] or "0"
                    elif first and transport == "poll":
                        headers.update(since)
                    resp_task = asyncio.ensure_future(
                        conn.http.request("GET", f"{base}/{chans}", headers))
                    if first:
                        first = False
                        # A long-poll is held open: live once the request is on the wire.
                        await asyncio.sleep(0.05 if transport == "longpoll" else 0)
                        if not conn.ready.done():
                            conn.ready.set_result(None)
                    resp = await resp_task
                    if resp.status == 200:
                        state["lm"] = resp.headers.get("last-modified", state["lm"])
                        state["etag"] = resp.headers.get("etag", state["etag"])
                        if not conn.ready.done():
                            conn.ready.set_result(None)
                        on_text(user, resp.body.decode())
                    elif resp.status in (304, 408):
                        if transport == "poll":
                            await asyncio.sleep(self.poll_interval)
                    else:
                        raise HttpError(resp.status, resp.body)
            _watch(conn, read_polls())
        await conn.ready
        return conn

    async def send(self, conn: Connection, conv: Conv, key: str, text: str) -> None:
        resp = await self.pool.request("POST", f"/pub/{self.channel_for(conv, conn.user)}",
                                       {"Content-Type": "text/plain"}, text.encode())
        if resp.status not in (200, 201, 202):
            raise HttpError(resp.status, resp.body)


# --------------------------------------------------------------------- python-socketio


class SocketIO(Target):
    """bench/peers/socketio_app.py over Engine.IO v4: polling and WebSocket."""

    name = "socketio"
    transports = ("ws", "longpoll")  # Engine.IO's polling transport is a long-poll

    def _handle(self, conn: Connection, packet: str, on_text: OnText) -> str | None:
        """One Engine.IO packet; returns a packet to send back (pong), if any."""
        if packet == "2":
            return "3"
        if packet.startswith("40"):
            if not conn.ready.done():
                conn.ready.set_result(None)
        elif packet.startswith("42"):
            name, text = json.loads(packet[2:])[:2]
            if name == "msg":
                on_text(conn.user, text)
        elif packet.startswith("43"):
            body = packet[2:]
            cut = body.index("[")
            fut = conn.pending.pop(int(body[:cut]), None)
            if fut and not fut.done():
                fut.set_result(None)
        return None

    async def connect(self, user: User, transport: str, on_text: OnText,
                      resume: Connection | None = None) -> Connection:
        conn = Connection(user, transport)
        auth = "40" + json.dumps({"rooms": sorted(set(user.channels)) or [f"u{user.uid}"]})
        if transport == "ws":
            conn.ws = await WebSocketClient.connect(
                self.port, "/socket.io/?EIO=4&transport=websocket")
            opened = await conn.ws.receive()
            if not opened or not opened.startswith("0"):
                raise RuntimeError(f"engine.io open: {opened!r}")
            conn.ws.send_text(auth)

            async def read_ws() -> None:
                while True:
                    text = await conn.ws.receive()
                    if text is None:
                        return
                    answer = self._handle(conn, text, on_text)
                    if answer:
                        conn.ws.send_text(answer)
            _watch(conn, read_ws())
        else:
            conn.http = HttpConnection(self.port)
            resp = await conn.http.request("GET", "/socket.io/?EIO=4&transport=polling")
            sid = json.loads(resp.body.decode()[1:])["sid"]
            conn.cursor = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
            await self._post(conn, auth)

            async def read_polls() -> None:
                while True:
                    resp = await conn.http.request("GET", conn.cursor)
                    if resp.status != 200:
                        raise HttpError(resp.status, resp.body)
                    for packet in resp.body.decode().split("\x1e"):
                        answer = self._handle(conn, packet, on_text)
                        if answer:
                            asyncio.ensure_future(self._post(conn, answer))
            _watch(conn, read_polls())
        await conn.ready
        return conn

    async def _post(self, conn: Connection, packet: str) -> None:
        resp = await self.pool.request("POST", conn.cursor, {"Content-Type": "text/plain"},
                                       packet.encode())
        if resp.status != 200:
            raise HttpError(resp.status, resp.body)

    async def send(self, conn: Connection, conv: Conv, key: str, text: str) -> None:
        ref = next(conn.refs)
        fut = asyncio.get_running_loop().create_future()
        conn.pending[ref] = fut
        packet = f"42{ref}" + json.dumps(["send", {"to": self.channel_for(conv, conn.user),
                                                   "text": text}])
        if conn.ws is not None:
            conn.ws.send_text(packet)
        else:
            await self._post(conn, packet)
        await fut


TARGETS = {cls.name: cls for cls in (Switchboard, Floor, Nchan, SocketIO)}
