"""The floor: bare Flask + gevent + Redis pub/sub, no chat semantics.

What the stack costs before Switchboard adds anything (auth, cursors, persistence,
idempotency): ``POST /pub/<channel>`` publishes the body; subscribers listen on
``/ws/<a,b>`` (WebSocket), ``/sse/<a,b>`` (SSE) or ``/lp/<a,b>?sub=<id>&wait=<s>``
(long-poll/poll from a per-subscriber in-process mailbox, so one worker only).

    gunicorn -k gevent -w 1 --worker-connections 12000 -b 127.0.0.1:PORT \\
        bench.peers.floor_app:app      (FLOOR_REDIS_URL=redis://127.0.0.1:PORT/0)
"""

from __future__ import annotations

import json
import os
from collections import defaultdict, deque

import gevent
import redis
from flask import Flask, Response, request
from gevent.event import Event

PREFIX = "floor:"
app = Flask(__name__)
_redis = redis.Redis.from_url(os.environ.get("FLOOR_REDIS_URL", "redis://127.0.0.1:6379/0"))
# channel -> set of local listeners (each a callable taking the message text)
_listeners: dict[str, set] = defaultdict(set)
# sub -> [queue, wake-up, number of the newest poll]: only the newest poll of a
# subscriber takes its messages, so a poll left parked by a client that went away
# (the previous run's) cannot empty the mailbox into a dead socket.
_mailboxes: dict[str, list] = {}


def _pump() -> None:
    pubsub = _redis.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(PREFIX + "*")
    for item in pubsub.listen():
        channel = item["channel"].decode()[len(PREFIX):]
        text = item["data"].decode()
        for listener in list(_listeners.get(channel, ())):
            listener(text)


_pump_greenlet = None


def _ensure_pump() -> None:
    global _pump_greenlet
    if _pump_greenlet is None:
        _pump_greenlet = gevent.spawn(_pump)
        gevent.sleep(0.05)


def _listen(channels: list[str], listener) -> None:
    for channel in channels:
        _listeners[channel].add(listener)


def _unlisten(channels: list[str], listener) -> None:
    for channel in channels:
        _listeners[channel].discard(listener)


@app.post("/pub/<channel>")
def publish(channel: str):
    _redis.publish(PREFIX + channel, request.get_data())
    return "ok"


@app.get("/sse/<channels>")
def sse(channels: str):
    _ensure_pump()
    names = channels.split(",")
    queue: deque = deque()
    ready = Event()

    def listener(text: str) -> None:
        queue.append(text)
        ready.set()

    def frames():
        _listen(names, listener)
        try:
            yield "data: ready\n\n"
            while True:
                if not ready.wait(15):
                    yield ": ping\n\n"
                ready.clear()
                while queue:
                    yield f"data: {queue.popleft()}\n\n"
        finally:
            _unlisten(names, listener)

    return Response(frames(), mimetype="text/event-stream")


@app.get("/lp/<channels>")
def long_poll(channels: str):
    _ensure_pump()
    sub = request.args["sub"]
    wait = float(request.args.get("wait", "0"))
    box = _mailboxes.get(sub)
    if box is None:
        box = _mailboxes[sub] = [deque(), Event(), 0]
        queue, ready = box[0], box[1]

        def listener(text: str) -> None:
            queue.append(text)
            ready.set()
        _listen(channels.split(","), listener)
        # Subscribed: say so at once, as the SSE and WebSocket routes' "ready" does,
        # instead of holding the client's first poll for ``wait`` seconds.
        return Response("[]", mimetype="application/json")
    queue, ready = box[0], box[1]
    box[2] += 1
    mine = box[2]
    if not queue and wait:
        ready.wait(wait)
    if box[2] != mine:  # a newer poll of this subscriber takes the messages
        return Response("[]", mimetype="application/json")
    ready.clear()
    out = list(queue)
    queue.clear()
    return Response(json.dumps(out), mimetype="application/json")


@app.route("/ws/<channels>", websocket=True)
def websocket(channels: str):
    # A bench-only package (bench/requirements.txt): imported here, so the floor's other
    # routes run with the project's own requirements (its test does).
    from simple_websocket import ConnectionClosed, Server

    _ensure_pump()
    names = channels.split(",")
    sock = Server.accept(request.environ)

    def listener(text: str) -> None:
        try:
            sock.send(text)
        except ConnectionClosed:
            pass
    _listen(names, listener)
    try:
        sock.send("ready")
        while True:
            sock.receive()
    except ConnectionClosed:
        pass
    finally:
        _unlisten(names, listener)
    return Response()
