"""Python client for Switchboard: the REST API plus the four event transports.

Used by bots, the CLI, the tests and the load generator::

    from switchboard_client import Api, open_transport
    api = Api("http://127.0.0.1:8080")
    api.sign_up("alice", "correct horse")
    feed = open_transport("ws", api)          # or "sse", "longpoll", "poll"
    for event in feed.next_batch(timeout=5): ...

    client = Client(api)                      # best transport, reconnect, resume, dedupe
    for event in client.events(timeout=60): ...

``python -m switchboard_client --help`` is a small CLI over the same pieces.
"""

from switchboard_client.client import Client
from switchboard_client.discovery import NodeDirectory, NoLiveNode
from switchboard_client.rest import Api, ApiError
from switchboard_client.transports import (
                                           TRANSPORTS,
                                           EventTransport,
                                           LongPollTransport,
                                           PollTransport,
                                           SSETransport,
                                           TransportClosed,
                                           WebSocketTransport,
                                           open_transport,
)

__all__ = ["TRANSPORTS", "Api", "ApiError", "Client", "EventTransport", "LongPollTransport",
           "NoLiveNode", "NodeDirectory", "PollTransport", "SSETransport", "TransportClosed",
           "WebSocketTransport", "open_transport"]
