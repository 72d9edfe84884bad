"""The worker's responses: head and body in one send, byte-for-byte what gunicorn sends.

Each case builds the same response with gunicorn's own Response and with ours over a
socket that records every send; the bytes must be identical and ours must use fewer
sends where a body follows the head.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.http import wsgi

from config.gunicorn_worker import OneWriteResponse


class RecordingSocket:
    def __init__(self) -> None:
        self.sends: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))


def request(method: str = "GET") -> Any:
    return SimpleNamespace(version=(1, 1), method=method, should_close=lambda: False)


def respond(cls: type, method: str, status: str, headers: list[tuple[str, str]],
            body: list[bytes]) -> list[bytes]:
    sock = RecordingSocket()
    cfg = SimpleNamespace(is_ssl=False, sendfile=False)
    resp = cls(request(method), sock, cfg)
    resp.start_response(status, headers)
    for chunk in body:
        resp.write(chunk)
    resp.close()
    return sock.sends


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(wsgi.util, "http_date", lambda *a: "Sat, 28 Nov 2026 09:00:00 GMT")


CASES = {
    "json with length": ("GET", "200 OK", [("Content-Type", "application/json"),
                                           ("Content-Length", "11")], [b'{"ok":true}']),
    "stream (chunked)": ("GET", "200 OK", [("Content-Type", "text/event-stream")],
                         [b"retry: 1000\n\n", b"data: x\n\n", b""]),
    "no body (204)": ("POST", "204 NO CONTENT", [], []),
    "HEAD": ("HEAD", "200 OK", [("Content-Length", "11")], [b'{"ok":true}']),
    "body past its length": ("GET", "200 OK", [("Content-Length", "2")], [b"abcdef", b"gh"]),
}


@pytest.mark.parametrize("case", CASES)
def test_same_bytes_as_gunicorn_in_fewer_sends(case: str) -> None:
    theirs = respond(wsgi.Response, *CASES[case])
    ours = respond(OneWriteResponse, *CASES[case])
    assert b"".join(ours) == b"".join(theirs)
    if CASES[case][3] and case != "HEAD":
        assert len(ours) == len(theirs) - 1
        assert ours[0].startswith(b"HTTP/1.1 ") and ours[0].count(b"\r\n\r\n") >= 1
        assert len(ours[0]) > len(theirs[0])  # the first body bytes came with the head
    else:
        assert len(ours) == len(theirs)
