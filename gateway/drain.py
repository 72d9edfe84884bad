"""Graceful drain under gunicorn's gevent worker (wired in by config/gunicorn.conf.py).

What gunicorn 27 does on its own when the master forwards SIGTERM to a gevent worker
(workers/base.py ``handle_exit``, workers/ggevent.py ``run``): ``alive`` goes False;
within a second the run loop closes its listening servers, then waits, polling once a
second, until its connection pool is empty or ``graceful_timeout`` passes, and then
kills what is left. Nothing in that tells a streaming client to leave, and an idle
keep-alive connection sits in ``next(parser)`` for up to ``keepalive`` seconds, holding
the pool and therefore the worker.

So :func:`install`, called from the ``post_worker_init`` hook (after gunicorn set its
signal handlers and loaded the app, before it serves), chains a SIGTERM handler to
gunicorn's. On SIGTERM the worker

1. withdraws from discovery, so no client is sent here any more;
2. closes every subscription (``hub.close_all("draining")``): SSE gets a ``close``
   event, WebSocket close code 1012, a parked long-poll answers ``"closed": "draining"``,
   and a stream opened afterwards on a kept-alive connection is closed at once;
3. shuts down, every ``_IDLE_SWEEP`` seconds, each client connection that is between
   requests with no bytes waiting, so only requests in progress keep the worker.

The worker then exits as soon as its clients are gone; ``graceful_timeout`` only
bounds a client that will not leave.
"""

from __future__ import annotations

import fcntl
import logging
import signal
import socket
import struct
import termios
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from flask import Flask

from gateway.discovery import discovery, public_url_for_bind
from gateway.services import EXTENSION as SERVICES

log = logging.getLogger(__name__)

# How often a draining worker looks for idle keep-alive connections to close. A stream
# ended by the drain turns idle right after its last byte, so this is also roughly how
# long after its clients left the worker still lingers.
_IDLE_SWEEP = 0.2
DRAIN_REASON = "draining"


class ConnectionTracker:
    """Every client connection of this worker, and which of them are inside a request.

    Connections are counted from accept (by wrapping the worker's ``handle``) to close;
    a WSGI middleware marks the span from the start of a request to the end of its
    response body (streams included) as busy.
    """

    def __init__(self) -> None:
        self.open: set[Any] = set()
        self.busy: dict[Any, int] = {}

    def wrap_handle(self, handle: Callable[..., Any]) -> Callable[..., Any]:
        def tracked(listener: Any, client: Any, addr: Any) -> Any:
            self.open.add(client)
            try:
                return handle(listener, client, addr)
            finally:
                self.open.discard(client)
                self.busy.pop(client, None)
        return tracked

    def wrap_wsgi(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def tracked(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            sock = environ.get("gunicorn.socket")
            if sock is None:
                return app(environ, start_response)
            self.busy[sock] = self.busy.get(sock, 0) + 1
            try:
                body = app(environ, start_response)
            except BaseException:  # StopIteration for a hijacked WebSocket, and errors
                self._done(sock)
                raise
            return _ClosingBody(body, self, sock)
        return tracked

    def _done(self, sock: Any) -> None:
        left = self.busy.get(sock, 0) - 1
        if left > 0:
            self.busy[sock] = left
        else:
            self.busy.pop(sock, None)

    def close_idle(self) -> int:
        """Shut down connections that are between requests; how many were."""
        closed = 0
        for sock in list(self.open):
            if self.busy.get(sock) or _bytes_waiting(sock):
                continue  # a request is being served, or its first bytes have arrived
            # The OS socket under gevent's: gevent's own shutdown() cancels the reader's
            # wait with EBADF, which gunicorn logs as a socket error with a traceback;
            # the kernel's shutdown wakes the read with a plain EOF instead.
            raw = getattr(sock, "_sock", sock)
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed by the peer meanwhile
            self.open.discard(sock)
            closed += 1
        return closed


class _ClosingBody:
    """The response body, telling the tracker when the server is done with it."""

    # One per open stream for as long as it lasts: slots, and no closure.
    __slots__ = ("_body", "_tracker", "_sock", "_closed")

    def __init__(self, body: Iterable[bytes], tracker: ConnectionTracker, sock: Any) -> None:
        self._body = body
        self._tracker = tracker
        self._sock = sock
        self._closed = False

    def __iter__(self) -> Any:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._closed:
                self._closed = True
                self._tracker._done(self._sock)


def _bytes_waiting(sock: Any) -> bool:
    """Whether the kernel holds unread bytes (a request arriving): FIONREAD never blocks."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return False
    return struct.unpack("i", raw)[0] > 0


class Drain:
    def __init__(self, app: Flask, tracker: ConnectionTracker) -> None:
        self.app = app
        self.tracker = tracker
        self.started = False

    def begin(self) -> None:
        """Start draining (idempotent); runs in its own greenlet, never in a handler."""
        if self.started:
            return
        self.started = True
        gevent.spawn(self._run)

    def _run(self) -> None:
        svc = self.app.extensions[SERVICES]
        discovery(self.app).withdraw()
        connections = sum(svc.hub.counts_by_transport().values())
        svc.hub.close_all(DRAIN_REASON)
        log.info("draining: withdrew from discovery, told %d connections to reconnect",
                 connections)
        while True:
            self.tracker.close_idle()
            gevent.sleep(_IDLE_SWEEP)


def install(worker: Any) -> Drain:
    """Wire discovery and the drain into a gunicorn gevent worker (post_worker_init)."""
    app: Flask = worker.wsgi
    tracker = ConnectionTracker()
    # gunicorn's GeventWorker.run() binds ``self.handle`` into each StreamServer after
    # this hook, so replacing the attribute now sees every accepted connection.
    worker.handle = tracker.wrap_handle(worker.handle)
    app.wsgi_app = tracker.wrap_wsgi(app.wsgi_app)  # type: ignore[method-assign]
    drain = Drain(app, tracker)

    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(sig: int, frame: Any) -> None:
        if callable(previous):
            previous(sig, frame)  # gunicorn's handle_exit: alive = False, stop accepting
        drain.begin()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn: no EINTR in active requests
    discovery(app).announce(public_url_for_bind(worker.cfg.bind[0]))
    return drain


def withdraw(worker: Any) -> None:
    """On worker exit (any cause but SIGKILL): leave discovery, free the worker id."""
    app = getattr(worker, "wsgi", None)
    if not isinstance(app, Flask):
        return
    discovery(app).withdraw()
    app.extensions[SERVICES].close()
