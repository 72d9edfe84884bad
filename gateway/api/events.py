"""The four transports over one event log: poll, long-poll, SSE and WebSocket.

Each handler authenticates, builds a :class:`~gateway.feed.Feed` from the client's
cursor and frames what the feed returns. See docs/protocol.md for the wire formats.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import gevent
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    request,
)
from flask.ctx import AppContext

from gateway import chat, metrics
from gateway import validation as v
from gateway import websocket as ws
from gateway.api.conversations import parse_message_id, parse_send
from gateway.auth import authenticate, issue_ticket
from gateway.errors import UNAVAILABLE, ApiError, bad_request, too_many, unavailable
from gateway.feed import Batch, Feed
from gateway.services import services
from storage.db import release_session
from storage.events import InvalidCursor, event_json
from storage.state_memory import LockTimeout

bp = Blueprint("events", __name__, url_prefix="/v1/events")
# ``own_prefix``: the start of the client_msg_ids the connection's client sends.
OWN_PREFIX_PATTERN = r"[A-Za-z0-9_.:\-]{1,32}"
log = logging.getLogger(__name__)


def _open_feed(transport: str, cursor: str | None, prefetch: int = 0,
               own_prefix: str | None = None) -> Feed:
    """Authenticate and open the feed, on a short-lived greenlet of its own.

    A greenlet keeps every page of Python frame stack it ever touched until it ends,
    and authentication goes deep (SQLAlchemy; a presence transition's friends query).
    The request's greenlet then parks with the stream for hours: opening the feed
    elsewhere keeps those pages out of it (~4 KiB per idle connection, measured).
    """
    helper = gevent.spawn(contextvars.copy_context().run, _returning_error, _open_feed_here,
                          transport, cursor, prefetch, own_prefix)
    try:
        opened = helper.get()
    except BaseException:
        # This request was killed while the helper works: close what it opens.
        helper.link_value(lambda done: _close_if_feed(done.value))
        raise
    if isinstance(opened, Exception):
        raise opened
    return opened


def _returning_error(fn: Callable[..., Any], *args: Any) -> Any:
    # Handed back rather than raised, so gevent does not report it as a crashed
    # greenlet; the caller raises it in the request's own greenlet.
    try:
        return fn(*args)
    except Exception as err:
        return err


def _close_if_feed(value: Any) -> None:
    if isinstance(value, Feed):
        value.close()


def _open_feed_here(transport: str, cursor: str | None, prefetch: int = 0,
                    own_prefix: str | None = None) -> Feed:
    session = authenticate(allow_ticket=transport in ("sse", "ws"))
    svc = services()
    # A stream holds no database connection for its lifetime.
    release_session()
    if transport != "poll" and svc.hub.connections(session.user_id) >= (
            svc.settings.max_connections_per_user):
        raise too_many("too many live connections for this user")
    try:
        feed = Feed(svc, session.user_id, session.id, cursor, transport, prefetch,
                    own_prefix)
    except InvalidCursor as err:
        raise bad_request(str(err), "invalid_cursor") from None
    metrics.note_fallback(request.args.get("fallback_from"), transport)
    return feed


@bp.post("/tickets")
def ticket():
    session = authenticate()
    return jsonify({"ticket": issue_ticket(session.user_id, session.id),
                    "expires_in": services().settings.ticket_ttl}), 201


@bp.get("")
def poll():
    settings = services().settings
    wait = v.query_float("wait", default=0.0, minimum=0.0, maximum=settings.longpoll_max_wait)
    limit = v.query_int("limit", default=100, minimum=1, maximum=settings.events_page_limit)
    feed = _open_feed("longpoll" if wait > 0 else "poll", request.args.get("cursor") or None,
                      prefetch=limit, own_prefix=_own_prefix())
    if wait > 0:
        return _LongPoll(current_app._get_current_object(), feed, wait, limit)
    try:
        return jsonify(_answer(feed, wait, limit))
    finally:
        feed.close()


def _own_prefix() -> str | None:
    return v.query_pattern("own_prefix", OWN_PREFIX_PATTERN,
                           "1-32 characters of A-Z a-z 0-9 _ . : -")


def _answer(feed: Feed, wait: float, limit: int) -> dict[str, Any]:
    batch = feed.next(wait, limit)
    metrics.observe_delivery(feed.sub.transport, feed.user_id, batch.events)
    body: dict[str, Any] = {"events": batch.events, "cursor": batch.cursor}
    if batch.closed:
        body["closed"] = batch.closed
    return body


class _LongPoll(Response):
    """A long-poll's answer, waited for once Flask has popped the request context: a
    parked poll holds no Request, session or URL adapter. Status and headers are only
    handed to the server with the body, so it is the same JSON answer as ``jsonify``."""

    def __init__(self, app: Flask, feed: Feed, wait: float, limit: int) -> None:
        super().__init__(mimetype=app.json.mimetype)
        self._app = app
        self._feed = feed
        self._wait = wait
        self._limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return _FeedBody(self._wait_then_answer(environ, start_response), self._feed)

    def _wait_then_answer(self, environ: dict[str, Any],
                          start_response: Any) -> Generator[bytes, None, None]:
        # An app context: a presence transition in feed.next looks up friends.
        with self._app.app_context():
            try:
                body = _answer(self._feed, self._wait, self._limit)
            finally:
                self._feed.close()
            self.set_data(self._app.json.response(body).get_data())
        yield from super().__call__(environ, start_response)


def _with_reset_ids(batch: Batch) -> list[dict[str, Any]]:
    """The batch's events as streams send them: a reset carries the cursor to resume at
    as its id (SSE's Last-Event-ID, the WebSocket client's resume point)."""
    return [{**p, "id": batch.cursor} if p["type"] == "reset" else p for p in batch.events]


def _sse_frame(payload: dict[str, Any]) -> bytes:
    head = f"id: {payload['id']}\n" if "id" in payload else ""
    return f"{head}data: {event_json(payload)}\n\n".encode()


@bp.get("/stream")
def stream():
    settings = services().settings
    cursor = request.headers.get("Last-Event-ID") or request.args.get("cursor") or None
    feed = _open_feed("sse", cursor, own_prefix=_own_prefix())
    app = current_app._get_current_object()

    def frames() -> Generator[bytes, None, None]:
        # The body runs after Flask has popped the request context: a parked stream
        # holds no Request, session or URL adapter (and gunicorn iterates this
        # generator directly, a shallower stack to save). An app context is still
        # needed: a presence transition in feed.next looks up friends in the database.
        with app.app_context():
            yield f"retry: {settings.sse_retry_ms}\n\n".encode()
            yield _sse_frame({"id": feed.cursor, "type": "ready",
                              "data": {"cursor": feed.cursor, "user_id": feed.user_id}})
            while True:
                batch = feed.next(settings.sse_heartbeat, settings.events_page_limit)
                if batch.closed:
                    yield _sse_frame({"type": "close", "data": {"reason": batch.closed}})
                    return
                if not batch.events:
                    yield b": ping\n\n"
                metrics.observe_delivery("sse", feed.user_id, batch.events)
                if batch.events:  # one chunk, one write, however many events
                    yield b"".join(_sse_frame(p) for p in _with_reset_ids(batch))

    # Bytes straight through: no per-chunk encoding generator nor closing wrapper.
    response = Response(_FeedBody(frames(), feed), mimetype="text/event-stream",
                        direct_passthrough=True)
    response.headers["Cache-Control"] = "no-cache, no-transform"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event through now
    return response


class _FeedBody:
    """A stream's body: gunicorn iterates ``frames`` itself; closing it (the client
    left, or the stream ended) closes the feed, even if iteration never started."""

    def __init__(self, frames: Generator[bytes, None, None], feed: Feed) -> None:
        self._frames = frames
        self._feed = feed

    def __iter__(self) -> Iterator[bytes]:
        return self._frames

    def close(self) -> None:
        try:
            self._frames.close()
        finally:
            self._feed.close()


@bp.route("/ws", methods=["GET"], websocket=True)
def websocket():
    problem = ws.handshake_error(request.environ)
    if problem:
        raise ApiError(400, "websocket_required", problem)
    settings = services().settings
    feed = _open_feed("ws", request.args.get("cursor") or None, own_prefix=_own_prefix())
    try:
        sock = ws.ServerWebSocket(request.environ, settings.max_body_bytes)
    except BaseException:
        feed.close()
        raise
    return _WebSocketSession(_WebSocketBody(current_app._get_current_object(), sock, feed))


class _WebSocketSession(Response):
    """The connection after the handshake: gunicorn must write no response.

    Flask pops the request context once it has called the view's response, so the
    session runs as the body (a parked connection holds no Request), and ends with
    StopIteration, which tells gunicorn's gevent worker the socket was taken over.
    """

    def __init__(self, body: _WebSocketBody) -> None:
        super().__init__()
        self._body = body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        # Nothing is written (gunicorn sends headers with the first body byte); the
        # status is only what its access log shows for the connection.
        start_response("101 Switching Protocols", [])
        return self._body


class _WebSocketBody:
    """The reading greenlets (one per burst of client frames) run in a context of their
    own, whose app context is pushed by the first and popped when the connection ends:
    pushing and tearing one down per burst was ~2.5 % of a saturated worker. Each frame
    still gives its database connection back (``release_session``)."""

    def __init__(self, app: Flask, sock: ws.ServerWebSocket, feed: Feed) -> None:
        self._app = app
        self._sock = sock
        self._feed = feed
        self._burst: gevent.Greenlet | None = None
        self._reader: contextvars.Context | None = None
        self._reader_app: AppContext | None = None

    def __iter__(self) -> Iterator[bytes]:
        # The writer runs here, in the request's greenlet; the client's frames are read
        # by a greenlet spawned when they arrive (_read_burst), none parked in between.
        # An app context: a presence transition in feed.next looks up friends.
        with self._app.app_context():
            try:
                self._sock.when_readable(self._readable)
                _ws_writer(self._sock, self._feed)
            finally:
                self.close()
        raise StopIteration()

    def _readable(self) -> None:  # from the event loop: must not block
        if self._reader is None:
            self._reader = contextvars.Context()
        self._burst = gevent.spawn(self._reader.run, self._read_burst)

    def _read_burst(self) -> None:
        sock, feed = self._sock, self._feed
        if self._reader_app is None:
            self._reader_app = self._app.app_context()
            self._reader_app.push()
        try:
            while True:
                sock.read_available()  # readable: returns without waiting
                while (text := sock.next_message()) is not None:
                    if feed.sub.closed:  # revoked or draining: accept nothing more
                        return
                    reply = _ws_handle(feed.user_id, text)
                    if reply is not None:
                        sock.send_json(reply)
                if not sock.data_waiting():
                    break
        except ws.WebSocketClosed:
            feed.sub.closed = feed.sub.closed or "client_closed"
            feed.sub.wake.set()
            return
        self._burst = None
        sock.when_readable(self._readable)

    def close(self) -> None:
        """Idempotent: stop reading, close the socket and the feed."""
        self._sock.stop_watching()
        if self._burst is not None:
            # Waited for: the reader's context must be left before its app context pops.
            self._burst.kill(block=True, timeout=5)
            self._burst = None
        self._sock.close(ws.CLOSE_GOING_AWAY)
        self._feed.close()
        reader, app_context = self._reader, self._reader_app
        self._reader_app = None
        if reader is not None and app_context is not None:
            try:
                reader.run(app_context.pop)  # the teardown: the frames' database session
            except RuntimeError:  # a reader that would not end is still in the context
                log.warning("WebSocket reader still running at close; its context is left")


def _ws_writer(sock: ws.ServerWebSocket, feed: Feed) -> None:
    settings = services().settings
    ping_every = settings.ws_ping_interval
    try:
        sock.send_json({"id": feed.cursor, "type": "ready",
                        "data": {"cursor": feed.cursor, "user_id": feed.user_id}})
        next_ping = time.monotonic() + ping_every
        while not sock.closed:
            batch = feed.next(max(0.0, next_ping - time.monotonic()),
                              settings.events_page_limit)
            if batch.closed:
                code = (ws.CLOSE_UNAUTHORIZED if batch.closed == "session_revoked"
                        else ws.CLOSE_SERVICE_RESTART)
                sock.close(code, batch.closed)
                return
            metrics.observe_delivery("ws", feed.user_id, batch.events)
            if batch.events:
                sock.send_json_many(_with_reset_ids(batch))
            if time.monotonic() >= next_ping:
                # A protocol ping for proxies, a JSON one for browsers (they hide pings).
                sock.ping()
                sock.send_json({"type": "ping", "data": {"cursor": feed.cursor}})
                next_ping = time.monotonic() + ping_every
    except ws.WebSocketClosed:
        pass
    finally:
        sock.close(ws.CLOSE_GOING_AWAY)


def _ws_handle(user_id: int, text: str) -> dict[str, Any] | None:
    """One client frame -> its answer, with the same rules as the HTTP routes."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return _ws_error(None, bad_request("frame is not valid JSON", "invalid_json"))
    if not isinstance(frame, dict):
        return _ws_error(None, bad_request("frame must be a JSON object", "invalid_json"))
    ref = frame.get("ref")
    # Echoed back verbatim, so only a short plain string or number is accepted.
    if ref is not None and not (isinstance(ref, (int, str)) and not isinstance(ref, bool)
                                and len(str(ref)) <= 64 and str(ref).isprintable()
                                and str(ref).isascii()):
        return _ws_error(None, bad_request("'ref' must be a short ASCII string or number",
                                           "invalid_field", field="ref"))
    kind = frame.get("type")
    try:
        services().presence.touch(user_id)
        if kind == "send":
            conversation_id = v.integer(frame, "conversation_id")
            client_msg_id, text_ = parse_send(frame)
            message, created = chat.send_message(user_id, conversation_id,
                                                 client_msg_id, text_)
            return {"type": "ack", "ref": ref,
                    "data": {"message": message.to_json(), "created": created}}
        if kind == "read":
            conversation_id = v.integer(frame, "conversation_id")
            mark = chat.mark_read(user_id, conversation_id, parse_message_id(frame))
            return {"type": "ack", "ref": ref, "data": {
                "conversation_id": conversation_id, "seq": mark.seq,
                "message_id": str(mark.message_id)}}
        if kind == "typing":
            conversation_id = v.integer(frame, "conversation_id")
            return {"type": "ack", "ref": ref,
                    "data": {"delivered": chat.typing(user_id, conversation_id)}}
        if kind == "ping":
            return {"type": "pong", "ref": ref}
        raise bad_request("unknown frame type", "invalid_frame")
    except ApiError as err:
        return _ws_error(ref, err)
    except UNAVAILABLE:
        # The same answer as HTTP's 503: the client retries with the same client_msg_id.
        return _ws_error(ref, unavailable("the message store is unavailable; retry shortly"))
    except LockTimeout:
        return _ws_error(ref, unavailable("the conversation is busy; retry shortly"))
    except Exception:
        # As HTTP's 500, and the connection keeps reading: an exception escaping here
        # would end the greenlet that reads this client's frames.
        log.exception("unhandled error in a WebSocket frame")
        return _ws_error(ref, ApiError(500, "internal", "internal error"))
    finally:
        release_session()


def _ws_error(ref: Any, err: ApiError) -> dict[str, Any]:
    return {"type": "error", "ref": ref,
            "data": {"status": err.status, **err.body()["error"]}}
