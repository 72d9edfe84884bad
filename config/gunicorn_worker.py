"""gunicorn's gevent worker, with each response's head sent with its first body bytes.

gunicorn writes the status line and headers in one send and the body in another. Every
send is a syscall and, on a socket with TCP_NODELAY, a TCP segment the client wakes up
for: most of our answers (a long-poll's events, a send's JSON) are one small body, so
the second send is a quarter of the socket work per HTTP request (measured: the header
send was 7 % of a gateway's CPU under long-poll load).
"""

from __future__ import annotations

from typing import Any

from gunicorn.http import wsgi
from gunicorn.workers.ggevent import GeventWorker as _GeventWorker


class OneWriteResponse(wsgi.Response):
    """Holds the head built inside ``write`` and sends it with that write's body; any
    other path (``close`` with no body, ``sendfile``, a body-less answer) sends it at
    once, as gunicorn would."""

    _head: bytes | None = None
    _in_write = False

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        lines.append("\r\n")
        self._head = "".join(lines).encode("latin-1")
        self.headers_sent = True
        if not self._in_write:
            self._flush_head()

    def write(self, arg: bytes) -> None:
        self._in_write = True
        try:
            super().write(arg)
        finally:
            self._in_write = False
        self._flush_head()  # a write that sent no body (HEAD, 204, past Content-Length)

    def _emit_body(self, data: bytes) -> None:
        head, self._head = self._head, None
        if head is None:
            super()._emit_body(data)
            return
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(head + data)

    def _flush_head(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self.sock.sendall(head)


class GeventWorker(_GeventWorker):
    """``worker_class`` in config/gunicorn.conf.py."""

    def init_process(self) -> Any:
        # gunicorn builds every request's response from this module-level name; set in
        # the worker process only, after fork.
        wsgi.Response = OneWriteResponse
        return super().init_process()
