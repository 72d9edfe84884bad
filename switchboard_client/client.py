"""Client: the Python twin of the browser SDK's connection logic.

It reads the user's events over the best transport that works (WebSocket, then SSE,
then long-poll, then poll), falls back when one cannot get going, reconnects with
backoff and jitter, resumes from its cursor on every reconnect and switch, drops
duplicates by event id and message id, and retries sends with the same
``client_msg_id`` until they are acknowledged::

    client = Client(api)                      # api: a signed-in Api
    for event in client.events(timeout=60):   # runs until the timeout
        print(event["type"], event["data"])
    client.send(conversation_id, "hi")        # idempotent, retried
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import requests

from switchboard_client.rest import Api, ApiError
from switchboard_client.transports import (
    TRANSPORTS,
    EventTransport,
    TransportClosed,
    WebSocketTransport,
)

ORDER = ("ws", "sse", "longpoll", "poll")


class _Recent:
    """A bounded set: the ids seen lately (at-least-once delivery repeats a few)."""

    def __init__(self, size: int = 5000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        if key in self._ids:
            return False
        self._ids[key] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


def _backoff(attempt: int, low: float, high: float) -> float:
    base = min(high, low * 2 ** max(0, attempt - 1))
    return base * (0.5 + random.random() / 2)  # jitter: clients do not stampede back


class Client:
    """Events and sends for one signed-in :class:`Api`, on whichever transport works."""

    def __init__(self, api: Api, transports: tuple[str, ...] = ORDER,
                 cursor: str | None = None, *, ready_timeout: float = 5.0,
                 backoff: tuple[float, float] = (0.5, 15.0),
                 on_transport: Callable[[str | None, str, str], None] | None = None) -> None:
        unknown = [t for t in transports if t not in TRANSPORTS]
        if unknown:
            raise ValueError(f"unknown transports: {unknown}")
        self.api = api
        self.candidates = list(transports)
        self.cursor = cursor
        self.ready_timeout = ready_timeout
        self.backoff = backoff
        self.on_transport = on_transport
        self.current: EventTransport | None = None
        self.transport: str | None = None
        self.history: list[tuple[str | None, str, str]] = []  # (from, to, why)
        self.resyncs = 0
        self._demoted: set[str] = set()
        self._events = _Recent()
        self._messages = _Recent()
        self._attempts = 0
        self._closed = False

    # --- connecting -----------------------------------------------------------------
    def _pick(self) -> str:
        for name in self.candidates:
            if name not in self._demoted:
                return name
        return self.candidates[-1]

    def connect(self) -> EventTransport:
        """Open the best transport that works, falling back and backing off as needed."""
        while not self._closed:
            name = self._pick()
            # It has its own messages from their sends: not handed back by the server.
            transport = TRANSPORTS[name](self.api, self.cursor,
                                         own_prefix=self.api.send_prefix)
            if hasattr(transport, "ready_timeout"):
                transport.ready_timeout = self.ready_timeout  # type: ignore[attr-defined]
            try:
                transport.connect()
            except TransportClosed as err:
                if err.reason.startswith("http 401"):
                    raise
                if not err.reason.startswith("network") and name != self.candidates[-1]:
                    # The API answered but this transport did not get going: blocked
                    # upgrade, stalled stream. Fall to the next one at once.
                    self._demoted.add(name)
                    continue
                self._sleep_backoff()
                continue
            except (ApiError, requests.RequestException) as err:
                if isinstance(err, ApiError) and err.status == 401:
                    raise TransportClosed("http 401: unauthorized") from err
                self._sleep_backoff()
                continue
            self._attempts = 0
            previous, self.transport, self.current = self.transport, name, transport
            if previous != name:
                why = "fallback" if self._demoted else "connect"
                self.history.append((previous, name, why))
                if self.on_transport:
                    self.on_transport(previous, name, why)
            return transport
        raise TransportClosed("client closed")

    def _sleep_backoff(self) -> None:
        self._attempts += 1
        time.sleep(_backoff(self._attempts, *self.backoff))

    # --- reading --------------------------------------------------------------------
    def next_batch(self, timeout: float) -> list[dict[str, Any]]:
        """New events (deduplicated) within ``timeout`` s, reconnecting as needed.

        A ``reset`` event is passed on: resynchronise (conversation list and latest
        history) and carry on; the cursor has moved to the reset's point already.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.current is None:
                self.connect()
            assert self.current is not None
            try:
                batch = self.current.next_batch(max(0.0, deadline - time.monotonic()))
            except TransportClosed as err:
                self.cursor = self.current.cursor or self.cursor
                self.current.close()
                self.current = None
                if err.reason in ("session_revoked", "http 401: unauthorized"):
                    raise
                if time.monotonic() >= deadline:
                    return []
                continue
            self.cursor = self.current.cursor or self.cursor
            fresh = [e for e in batch if self._fresh(e)]
            if fresh or time.monotonic() >= deadline:
                return fresh

    def _fresh(self, event: dict[str, Any]) -> bool:
        if event.get("type") == "reset":
            self.resyncs += 1
            return True
        if "id" in event and not self._events.add(str(event["id"])):
            return False
        if event.get("type") == "message.created":
            return self._messages.add(str(event["data"]["id"]))
        return True

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield events until ``timeout`` s pass (forever when None) or close()."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            remaining = 25.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return
            yield from self.next_batch(min(remaining, 25.0))

    # --- sending --------------------------------------------------------------------
    def send(self, conversation_id: int, text: str, client_msg_id: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        """Send, retrying with the same client_msg_id until acknowledged or ``timeout``.

        Goes over the WebSocket when that is the transport in use, else HTTP POST.
        Raises ApiError at once for errors a retry cannot fix (not a member, too long).
        """
        cmid = client_msg_id or self.api.new_client_msg_id()
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                message = self._send_once(conversation_id, text, cmid)
                self._messages.add(str(message["id"]))
                return message
            except ApiError as err:
                if err.status not in (408, 429) and err.status < 500:
                    raise
                problem: Exception = err
            except (TransportClosed, requests.RequestException) as err:
                problem = err
            pause = _backoff(attempt, *self.backoff)
            if time.monotonic() + pause > deadline:
                raise TimeoutError(f"send {cmid} not acknowledged: {problem}") from problem
            time.sleep(pause)

    def _send_once(self, conversation_id: int, text: str, cmid: str) -> dict[str, Any]:
        if isinstance(self.current, WebSocketTransport) and self.current.sock is not None:
            reply = self.current.send_message(conversation_id, text, cmid)
            if reply.get("type") == "ack":
                return reply["data"]["message"]
            error = reply.get("data", {})
            raise ApiError(int(error.get("status", 400)), {"error": error})
        return self.api.send(conversation_id, text, client_msg_id=cmid)

    def close(self) -> None:
        self._closed = True
        if self.current is not None:
            self.current.close()
            self.current = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
