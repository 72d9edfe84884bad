"""The four event transports with one interface: ``next_batch(timeout)`` -> events.

Every transport tracks the client's cursor (the id of the last durable event, or the
cursor a reset hands out), so a new transport of any kind can resume where another
stopped. Ephemeral events (no ``id``) and ``reset`` events are returned as they come.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import requests
import websocket

from switchboard_client.rest import Api, ApiError

_SKIP = {"ready", "ping", "pong"}  # transport bookkeeping, not events for the caller


class TransportClosed(Exception):
    """The server ended the connection (``reason``) or the network dropped it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventTransport:
    name = "base"

    def __init__(self, api: Api, cursor: str | None = None,
                 own_prefix: str | None = None) -> None:
        self.api = api
        self.cursor = cursor
        # Names this client's client_msg_id prefix (Api.send_prefix): the server then
        # holds its own messages back until the next batch (docs/protocol.md).
        self.own_prefix = own_prefix
        self.heartbeats: list[float] = []  # time.monotonic() of each heartbeat seen

    def connect(self) -> EventTransport:
        return self

    def next_batch(self, timeout: float) -> list[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _track(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for payload in payloads:
            kind = payload.get("type")
            if kind == "reset":
                self.cursor = payload["data"]["cursor"]
            elif "id" in payload:
                self.cursor = payload["id"]
            if kind in ("ping", "heartbeat"):
                self.heartbeats.append(time.monotonic())
            if kind not in _SKIP:
                out.append(payload)
        return out

    def collect(self, count: int, timeout: float, kind: str | None = None) -> list[dict]:
        """Read until ``count`` events (of ``kind``, if given) arrived or time is up."""
        deadline = time.monotonic() + timeout
        got: list[dict] = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            batch = self.next_batch(min(remaining, 5.0))
            got.extend(e for e in batch if kind is None or e.get("type") == kind)
        return got

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float) -> dict | None:
        """The first event matching ``predicate`` within ``timeout`` s, else None."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            for event in self.next_batch(min(remaining, 5.0)):
                if predicate(event):
                    return event
        return None

    def __enter__(self) -> EventTransport:
        return self  # open_transport() has connected already

    def __exit__(self, *_exc: object) -> None:
        self.close()


class PollTransport(EventTransport):
    """Plain polling: ``GET /v1/events`` with no wait, every ``interval`` seconds."""
    name = "poll"

    def __init__(self, api: Api, cursor: str | None = None, interval: float = 0.2,
                 own_prefix: str | None = None) -> None:
        super().__init__(api, cursor, own_prefix)
        self.interval = interval
        self._last = 0.0

    def connect(self) -> EventTransport:
        if self.cursor is None:
            self.cursor = self.api.poll(None)["cursor"]
        return self

    def _get(self, wait: float) -> list[dict[str, Any]]:
        try:
            body = self.api.poll(self.cursor, wait=wait, own_prefix=self.own_prefix)
        except requests.RequestException as err:
            raise TransportClosed(f"network: {err}") from err
        except ApiError as err:
            raise TransportClosed(f"http {err.status}: {err.code}") from err
        events = self._track(body["events"])
        self.cursor = body["cursor"]
        if body.get("closed"):
            raise TransportClosed(body["closed"])
        return events

    def next_batch(self, timeout: float) -> list[dict[str, Any]]:
        pause = self._last + self.interval - time.monotonic()
        if pause > 0:
            time.sleep(min(pause, timeout))
        self._last = time.monotonic()
        return self._get(0)


class LongPollTransport(PollTransport):
    """``GET /v1/events?wait=N``: answered at once if events exist, else when one arrives."""
    name = "longpoll"

    def __init__(self, api: Api, cursor: str | None = None, wait: float = 20.0,
                 own_prefix: str | None = None) -> None:
        super().__init__(api, cursor, interval=0, own_prefix=own_prefix)
        self.wait = wait

    def next_batch(self, timeout: float) -> list[dict[str, Any]]:
        events = self._get(max(0.0, min(self.wait, timeout)))
        if not events:
            self.heartbeats.append(time.monotonic())  # an empty answer is the heartbeat
        return events


class _ThreadedTransport(EventTransport):
    """A reader thread turns a stream into a queue of parsed payloads."""

    def __init__(self, api: Api, cursor: str | None = None,
                 own_prefix: str | None = None) -> None:
        super().__init__(api, cursor, own_prefix)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closing = False

    def _start_reader(self) -> None:
        self._thread = threading.Thread(target=self._read_loop, daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:  # pragma: no cover - replaced by subclasses
        raise NotImplementedError

    # Seconds to wait for the stream's first frame. A buffering proxy holds an SSE stream
    # back entirely, so silence this long means the path cannot stream.
    ready_timeout = 10.0

    def _await_ready(self) -> None:
        # The first frame is "ready" with the cursor the stream starts from.
        try:
            first = self._queue.get(timeout=self.ready_timeout)
        except queue.Empty:
            self.close()
            raise TransportClosed("no ready event (held back by a proxy?)") from None
        if isinstance(first, TransportClosed):
            raise first
        self._track([first])
        if first.get("type") != "ready":
            self._queue.queue.appendleft(first)

    def next_batch(self, timeout: float) -> list[dict[str, Any]]:
        items: list[Any] = []
        try:
            items.append(self._queue.get(timeout=timeout))
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        payloads = []
        for item in items:
            if isinstance(item, TransportClosed):
                out = self._track(payloads)
                if out:  # hand over what arrived first; raise on the next call
                    self._queue.queue.appendleft(item)
                    return out
                raise item
            payloads.append(item)
        return self._track(payloads)


class SSETransport(_ThreadedTransport):
    """``text/event-stream``; authenticates with a single-use ticket like a browser."""
    name = "sse"

    def __init__(self, api: Api, cursor: str | None = None, read_timeout: float = 60.0,
                 use_ticket: bool = True, own_prefix: str | None = None) -> None:
        super().__init__(api, cursor, own_prefix)
        self.read_timeout = read_timeout
        self.use_ticket = use_ticket
        self._response: requests.Response | None = None

    def connect(self) -> EventTransport:
        params: dict[str, str] = {}
        headers: dict[str, str] = {"Accept": "text/event-stream"}
        if self.use_ticket:
            params["ticket"] = self.api.ticket()
        else:
            headers.update(self.api.headers())
        if self.own_prefix:
            params["own_prefix"] = self.own_prefix
        if self.cursor:
            headers["Last-Event-ID"] = self.cursor
        try:
            # The head must come within ready_timeout: a buffering proxy holds it back.
            response = self.api.http.get(f"{self.api.base_url}/v1/events/stream",
                                         params=params, headers=headers, stream=True,
                                         timeout=(10, min(self.read_timeout,
                                                          self.ready_timeout)))
        except requests.ReadTimeout as err:
            raise TransportClosed("no response head (held back by a proxy?)") from err
        except requests.RequestException as err:
            raise TransportClosed(f"network: {err}") from err
        sock = getattr(getattr(response.raw, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(self.read_timeout)  # the stream itself: heartbeats every 15 s
        if response.status_code != 200:
            body = response.json() if response.content else None
            response.close()
            raise TransportClosed(f"http {response.status_code}: {body}")
        self._response = response
        self._start_reader()
        self._await_ready()
        return self

    def _read_loop(self) -> None:
        assert self._response is not None
        data: list[str] = []
        buffer = b""
        try:
            # Our own line splitting: requests' iter_lines can repeat a line that
            # straddles two chunks.
            for chunk in self._response.raw.stream(None, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8").rstrip("\r")
                    if not line:
                        if data:
                            self._queue.put(self._read_item(json.loads("\n".join(data))))
                            data = []
                    elif line.startswith(":"):
                        self.heartbeats.append(time.monotonic())
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
            self._queue.put(TransportClosed("stream ended"))
        except Exception as err:  # noqa: BLE001 - any failure ends this stream
            self._queue.put(TransportClosed("closed" if self._closing else f"network: {err}"))

    def _read_item(self, payload: dict[str, Any]) -> Any:
        # The server's goodbye ends the stream like a dropped connection, but only after
        # the events that came before it have been handed over (their cursor counts).
        if payload.get("type") == "close":
            return TransportClosed(payload["data"]["reason"])
        return payload

    def close(self) -> None:
        self._closing = True
        if self._response is not None:
            self._response.close()


class WebSocketTransport(_ThreadedTransport):
    """``/v1/events/ws``: events in, sends/reads/typing out, acknowledged by ``ref``."""
    name = "ws"

    def __init__(self, api: Api, cursor: str | None = None, use_ticket: bool = False,
                 own_prefix: str | None = None) -> None:
        super().__init__(api, cursor, own_prefix)
        self.use_ticket = use_ticket
        self.sock: websocket.WebSocket | None = None
        self._refs = itertools.count(1)
        self._acks: dict[Any, queue.Queue] = {}
        self.close_code: int | None = None

    def connect(self) -> EventTransport:
        query: dict[str, str] = {}
        header = []
        if self.use_ticket:
            query["ticket"] = self.api.ticket()
        else:
            header = [f"{k}: {v}" for k, v in self.api.headers().items()]
        if self.cursor:
            query["cursor"] = self.cursor
        if self.own_prefix:
            query["own_prefix"] = self.own_prefix
        url = self.api.base_url.replace("http", "ws", 1) + "/v1/events/ws"
        if query:
            url += "?" + urlencode(query)
        try:
            self.sock = websocket.create_connection(url, header=header, timeout=10)
        except websocket.WebSocketBadStatusException as err:
            raise TransportClosed(f"http {err.status_code}") from err
        except (OSError, websocket.WebSocketException) as err:
            raise TransportClosed(f"network: {err}") from err
        self.sock.settimeout(None)
        self._start_reader()
        self._await_ready()
        return self

    def _read_loop(self) -> None:
        assert self.sock is not None
        try:
            while True:
                opcode, data = self.sock.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                    reason = data[2:].decode("utf-8", "replace") if len(data) > 2 else "closed"
                    self._queue.put(TransportClosed(reason or "closed"))
                    return
                payload = json.loads(data)
                waiter = self._acks.pop(payload.get("ref"), None) if payload.get("ref") else None
                if waiter is not None:
                    waiter.put(payload)
                else:
                    self._queue.put(payload)
        except Exception as err:  # noqa: BLE001 - any failure ends this stream
            self._queue.put(TransportClosed("closed" if self._closing else f"network: {err}"))

    def request(self, frame: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Send a frame and wait for its ``ack`` or ``error``."""
        assert self.sock is not None
        ref = f"r{next(self._refs)}"
        waiter: queue.Queue = queue.Queue()
        self._acks[ref] = waiter
        try:
            self.sock.send(json.dumps({**frame, "ref": ref}))
        except (OSError, websocket.WebSocketException) as err:
            raise TransportClosed(f"network: {err}") from err
        try:
            return waiter.get(timeout=timeout)
        except queue.Empty:
            raise TransportClosed("no acknowledgement") from None

    def send_message(self, conversation_id: int, text: str,
                     client_msg_id: str | None = None) -> dict[str, Any]:
        return self.request({"type": "send", "conversation_id": conversation_id,
                             "client_msg_id": client_msg_id or self.api.new_client_msg_id(),
                             "text": text})

    def close(self) -> None:
        self._closing = True
        if self.sock is not None:
            try:
                self.sock.close()
            except (OSError, websocket.WebSocketException):
                pass


TRANSPORTS: dict[str, type[EventTransport]] = {
    "poll": PollTransport, "longpoll": LongPollTransport, "sse": SSETransport,
    "ws": WebSocketTransport}


def open_transport(name: str, api: Api, cursor: str | None = None,
                   **options: Any) -> EventTransport:
    return TRANSPORTS[name](api, cursor, **options).connect()
