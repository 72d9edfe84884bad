"""A server WebSocket over the raw socket gunicorn's gevent worker hands to the app.

The handshake is answered by hand (RFC 6455 section 4.2.2), frames are read and written
by gateway/ws_frames.py. One greenlet at a time reads
(``receive``, or ``read_available`` + ``next_message`` when woken by ``when_readable``),
any greenlet may send: sends are serialised by a lock.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import struct
import termios
from collections.abc import Callable
from typing import Any

from gevent import get_hub
from gevent.lock import Semaphore

from gateway.ws_frames import (
    CLOSE_INVALID_DATA,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameReader,
    close_frame,
    frame,
    parse_close,
    text_frame,
)
from storage.events import event_json

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_SERVICE_RESTART = 1012  # drain: reconnect (elsewhere) and resume from the cursor
CLOSE_UNAUTHORIZED = 4001


class WebSocketClosed(Exception):
    pass


def is_upgrade(environ: dict[str, Any]) -> bool:
    return (environ.get("HTTP_UPGRADE", "").lower() == "websocket"
            and "upgrade" in environ.get("HTTP_CONNECTION", "").lower())


def handshake_error(environ: dict[str, Any]) -> str | None:
    if not is_upgrade(environ):
        return "expected a WebSocket upgrade request"
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
        return "unsupported WebSocket version (need 13)"
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return "invalid Sec-WebSocket-Key"
    except ValueError:
        return "invalid Sec-WebSocket-Key"
    if "gunicorn.socket" not in environ:
        return "WebSocket needs gunicorn's gevent worker"
    return None


class ServerWebSocket:
    def __init__(self, environ: dict[str, Any], max_message: int) -> None:
        self.sock = environ["gunicorn.socket"]
        self._reader = FrameReader(max_message)
        self._send_lock = Semaphore()
        self._watcher: Any = None  # the event loop's read watcher, see when_readable
        self.closed = False
        key = environ["HTTP_SEC_WEBSOCKET_KEY"].encode()
        accept = base64.b64encode(hashlib.sha1(key + _GUID.encode()).digest()).decode()
        self.sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                           ).encode())

    def _write(self, data: bytes) -> None:
        if not data:
            return
        with self._send_lock:
            try:
                # One send() nearly always takes a frame whole; gevent's sendall would
                # first ask the kernel for the send buffer's size, a syscall per frame.
                sent = self.sock.send(data)
                if sent < len(data):  # the buffer was full: the rest waits for room
                    self.sock.sendall(memoryview(data)[sent:])
            except OSError as err:
                self.closed = True
                raise WebSocketClosed(str(err)) from err

    def send_json(self, payload: Any) -> None:
        self.send_json_many([payload])

    def send_json_many(self, payloads: list[Any]) -> None:
        """Several messages in one write (one syscall, and one segment when small)."""
        if self.closed:  # also once a close was sent or received
            raise WebSocketClosed("closed")
        self._write(b"".join(text_frame(event_json(p)) for p in payloads))

    def ping(self) -> None:
        if not self.closed:
            self._write(frame(OP_PING, b"sb"))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self.closed:
            return
        try:
            self._write(close_frame(code, reason))
        except WebSocketClosed:
            pass
        self.closed = True
        # Before the descriptor goes: the event loop must not watch a closed (or reused) fd.
        self.stop_watching()
        self._discard_unread()
        try:
            self.sock.close()
        except OSError:
            pass

    def _discard_unread(self) -> None:
        """Drop what the client sent that was not read (a pong, a frame in flight): with
        unread bytes the kernel answers close() with a reset, which may discard what was
        not transmitted yet, our close frame among them. Never waits, and gives up after
        a few reads so a client streaming at us cannot hold the close."""
        for _ in range(16):
            if not self.data_waiting():
                return
            try:
                if not self.sock.recv(65536):
                    return
            except OSError:
                return

    def receive(self) -> str:
        """The next text message; raises WebSocketClosed when the peer goes away."""
        while True:
            message = self.next_message()
            if message is not None:
                return message
            self.read_available()

    def next_message(self) -> str | None:
        """The next complete text message among the bytes already read, else None.
        Control frames found on the way are answered (ping) or end the connection."""
        while True:
            try:
                got = self._reader.next()
                if got is None:
                    return None
                message = self._handle(*got)
            except FrameError as err:
                self.close(err.code, err.reason)
                raise WebSocketClosed(err.reason) from err
            if message is not None:
                return message

    def read_available(self) -> None:
        """One read from the socket into the parser; waits only if nothing has arrived."""
        try:
            data = self.sock.recv(65536)
        except OSError as err:
            self.closed = True
            raise WebSocketClosed(str(err)) from err
        if not data:
            self.closed = True
            raise WebSocketClosed("peer closed the connection")
        self._reader.feed(data)

    def data_waiting(self) -> bool:
        """Whether bytes have arrived that were not read yet (never blocks)."""
        pending = getattr(self.sock, "pending", None)  # TLS: bytes decrypted, not read
        if pending is not None and pending():
            return True
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return False
        return struct.unpack("i", raw)[0] > 0

    def when_readable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, from the event loop, when the socket turns readable
        (bytes, end of stream or an error). Lets a connection wait for its client without
        a greenlet parked in ``recv``: ``callback`` must not block (spawn, set an event)."""
        if self.closed:
            return
        if self._watcher is None:
            self._watcher = get_hub().loop.io(self.sock.fileno(), 1)
        self._watcher.start(self._fire, callback)

    def _fire(self, callback: Callable[[], None]) -> None:
        self._watcher.stop()
        callback()

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
            self._watcher = None

    def _handle(self, opcode: int, payload: bytes) -> str | None:
        if opcode == OP_TEXT:
            try:
                return payload.decode()
            except UnicodeDecodeError:
                raise FrameError(CLOSE_INVALID_DATA, "text message is not UTF-8") from None
        if opcode == OP_PING:
            self._write(frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            code, _ = parse_close(payload)
            try:  # answered with the code it came with, as RFC 6455 section 5.5.1 asks
                self._write(close_frame(code))
            except WebSocketClosed:
                pass
            self.closed = True
            raise WebSocketClosed(f"peer closed ({code})")
        elif opcode != OP_PONG:  # a binary message
            raise FrameError(CLOSE_POLICY, "binary frames are not supported")
        return None
