"""WebSocket framing for the server side (RFC 6455 section 5), no extensions.

The server writes unmasked frames (``frame``, ``text_frame``) and reads its clients'
masked ones with :class:`FrameReader`, which hands over only what is complete: a whole
message (fragments joined) or a control frame. A general-purpose library's reader cost
about 7 % of a saturated gateway worker (events, generators and an incremental UTF-8
decoder per frame); a chat client sends small whole frames, which this reads in a few
slices and one integer XOR.
"""

from __future__ import annotations

import struct

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_DATA_OPS = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_NO_STATUS = 1005  # a close frame without a code (never sent on the wire)


class FrameError(Exception):
    """The client broke the protocol: close with ``code`` (and ``reason``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (a server never masks)."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


def text_frame(text: str) -> bytes:
    return frame(OP_TEXT, text.encode())


def close_frame(code: int, reason: str = "") -> bytes:
    if code == CLOSE_NO_STATUS:
        return frame(OP_CLOSE, b"")
    # A control frame's payload is at most 125 bytes: the code's 2 and 123 of reason.
    return frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode()[:123])


def unmask(key: bytes, data: bytes) -> bytes:
    """XOR with the 4-byte masking key, as one integer operation."""
    size = len(data)
    if not size:
        return b""
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        size, "little")


def parse_close(payload: bytes) -> tuple[int, str]:
    """A close frame's code and reason (1005 when it carries none)."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    # Codes a peer may send: 1000-1003, 1007-1014, and 3000-4999 (registered/private).
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise FrameError(CLOSE_PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        return code, payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None


class FrameReader:
    """Reads a client's frames from the bytes ``feed`` is given. ``next`` returns
    ``(opcode, payload)`` for each whole message (OP_TEXT or OP_BINARY, its fragments
    joined) or control frame, in order, and None until more bytes are needed. A message
    longer than ``max_message`` is refused from its header, before its bytes arrive."""

    __slots__ = ("max_message", "_buf", "_parts", "_size", "_opcode")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._parts: list[bytes] = []  # fragments of the message under way
        self._size = 0
        self._opcode = 0  # the fragmented message's opcode, 0 when none is under way

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> tuple[int, bytes] | None:
        while True:
            buf = self._buf
            if len(buf) < 2:
                return None
            head, second = buf[0], buf[1]
            if head & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
            if not second & 0x80:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            opcode, final = head & 0x0F, head & 0x80
            size, start = second & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    return None
                size, start = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    return None
                size, start = int.from_bytes(buf[2:10], "big"), 10
            if opcode in _CONTROL_OPS:
                if not final or size > 125:
                    raise FrameError(CLOSE_PROTOCOL_ERROR,
                                     "control frames are final and at most 125 bytes")
            elif opcode not in _DATA_OPS:
                raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            elif self._size + size > self.max_message:
                raise FrameError(CLOSE_TOO_BIG, "message too big")
            end = start + 4 + size
            if len(buf) < end:
                return None
            payload = unmask(bytes(buf[start:start + 4]), bytes(buf[start + 4:end]))
            del buf[:end]
            if opcode in _CONTROL_OPS:
                return opcode, payload  # may come between a message's fragments
            if (opcode == OP_CONTINUATION) != bool(self._opcode):
                raise FrameError(CLOSE_PROTOCOL_ERROR,
                                 "continuation frame outside a fragmented message"
                                 if opcode == OP_CONTINUATION
                                 else "new message before the last one ended")
            if final and not self._opcode:
                return opcode, payload  # the usual case: one whole message, one frame
            if not self._opcode:
                self._opcode = opcode
            self._parts.append(payload)
            self._size += size
            if final:
                opcode, data = self._opcode, b"".join(self._parts)
                self._parts.clear()
                self._size = self._opcode = 0
                return opcode, data
