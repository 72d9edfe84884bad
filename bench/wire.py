"""Minimal client-side wire formats for the load generator: HTTP/1.1, SSE, WebSocket.

Cheap per connection on purpose: one asyncio stream pair per socket, no threads, no
parsing beyond what the benchmark needs. Every request is written with one ``write``
(headers and body together) so no peer is held back by Nagle/delayed-ACK on our side;
asyncio sets TCP_NODELAY on every TCP connection it opens.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

HOST = "127.0.0.1"


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def _request_bytes(method: str, path: str, port: int, headers: dict[str, str] | None,
                   body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return status, headers


async def iter_body(reader: asyncio.StreamReader, headers: dict[str, str]
                    ) -> AsyncIterator[bytes]:
    """The body as it arrives: chunked, sized, or until the connection closes."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length:
            yield await reader.readexactly(length)
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None) -> Response:
        for attempt in (0, 1):
            if self.writer is None:
                await self.connect()
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(_request_bytes(method, path, self.port, headers, body))
                status, head = await read_head(self.reader)
                data = b"".join([part async for part in iter_body(self.reader, head)])
            except (ConnectionError, asyncio.IncompleteReadError):
                # A keep-alive connection the server closed: once more on a new one.
                self.close()
                if attempt:
                    raise
                continue
            if head.get("connection", "").lower() == "close":
                self.close()
            return Response(status, head, data)
        raise AssertionError("unreachable")


class HttpPool:
    """A few keep-alive connections shared by many coroutines (the REST side)."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(HttpConnection(port))

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None) -> Response:
        conn = await self.idle.get()
        try:
            return await conn.request(method, path, headers, body)
        except BaseException:
            conn.close()
            raise
        finally:
            self.idle.put_nowait(conn)

    async def json(self, method: str, path: str, payload: Any = None,
                   headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201)
                   ) -> Any:
        hdrs = dict(headers or {})
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            hdrs["Content-Type"] = "application/json"
        resp = await self.request(method, path, hdrs, body)
        if resp.status not in ok:
            raise HttpError(resp.status, resp.body)
        return resp.json() if resp.body else None

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait().close()


async def open_stream(port: int, path: str, headers: dict[str, str] | None = None
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int,
                                 dict[str, str]]:
    """A GET whose body is read incrementally (SSE, chunked streams)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(_request_bytes("GET", path, port, headers, None))
    status, head = await read_head(reader)
    return reader, writer, status, head


class SseParser:
    """Feed bytes, get ``(id, data)`` per event; comments and ``retry:`` are skipped."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[str | None, str]]:
        self.buf += data
        events = []
        while True:
            # Servers differ on line endings; normalise CRLF first.
            if b"\r" in self.buf:
                self.buf = self.buf.replace(b"\r\n", b"\n")
            end = self.buf.find(b"\n\n")
            if end < 0:
                return events
            block, self.buf = self.buf[:end], self.buf[end + 2:]
            event_id = None
            data_lines = []
            for line in block.decode().split("\n"):
                if line.startswith("data:"):
                    data_lines.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
                elif line.startswith("id:"):
                    event_id = line[3:].strip()
            if data_lines:
                events.append((event_id, "\n".join(data_lines)))


class WebSocketClient:
    """Client side of RFC 6455: masked frames out, unmasked frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str, headers: dict[str, str] | None = None
                      ) -> WebSocketClient:
        key = base64.b64encode(os.urandom(16)).decode()
        hdrs = {"Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13", **(headers or {})}
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(_request_bytes("GET", path, port, hdrs, None))
        status, head = await read_head(reader)
        if status != 101:
            body = b"".join([p async for p in iter_body(reader, head)])
            writer.close()
            raise HttpError(status, body)
        return cls(reader, writer)

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        # XOR through int arithmetic: fast enough for short frames without numpy.
        full = (mask * (n // 4 + 1))[:n]
        masked = ((int.from_bytes(payload, "big") ^ int.from_bytes(full, "big"))
                  .to_bytes(n, "big") if n else b"")
        return head + mask + masked

    def send_text(self, text: str) -> None:
        self.writer.write(self._frame(0x1, text.encode()))

    def send_json(self, payload: Any) -> None:
        self.send_text(json.dumps(payload))

    async def receive(self) -> str | None:
        """The next text/binary message, or None when the server closed."""
        parts: list[bytes] = []
        while True:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            if b1 & 0x80:  # servers must not mask, but tolerate it
                mask = await self.reader.readexactly(4)
                raw = await self.reader.readexactly(n)
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(raw))
            else:
                payload = await self.reader.readexactly(n) if n else b""
            opcode = b0 & 0x0F
            if opcode == 0x8:
                self.close()
                return None
            if opcode == 0x9:
                self.writer.write(self._frame(0xA, payload))
                continue
            if opcode == 0xA:
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        if not self.writer.is_closing():
            try:
                self.writer.write(self._frame(0x8, struct.pack("!H", 1000)))
            except (ConnectionError, RuntimeError):
                pass
            self.writer.close()
