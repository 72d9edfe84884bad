"""Choosing a gateway node on (re)connect, from ``GET /v1/discover``.

Any live node answers for all of them, so the directory asks the nodes it knows in turn
(the one the client just lost last) and remembers every node named in the answers::

    nodes = NodeDirectory(["http://gw1:8080", "http://gw2:8080"])
    nodes.move(api)                    # api.base_url <- the least-loaded live node
    ...                                # the stream ends (node killed or draining):
    nodes.move(api, avoid=failed_url)  # another node, then resume from the cursor

A node that died a moment ago stays listed until its discovery TTL runs out, so the
client names the node it lost in ``avoid`` and is never sent straight back to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests

from switchboard_client.rest import Api, ApiError


class NoLiveNode(Exception):
    """No known node answered, or every live one is to be avoided."""


class NodeDirectory:
    def __init__(self, seeds: Iterable[str], timeout: float = 3.0) -> None:
        self.known: list[str] = list(dict.fromkeys(u.rstrip("/") for u in seeds))
        if not self.known:
            raise ValueError("at least one seed URL is needed")
        self.timeout = timeout
        self.last: dict[str, Any] | None = None  # the last discover answer

    def discover(self, avoid: Iterable[str] = ()) -> dict[str, Any]:
        """The first answer of a live node, asking the avoided ones last."""
        shunned = {u.rstrip("/") for u in avoid}
        order = ([u for u in self.known if u not in shunned]
                 + [u for u in self.known if u in shunned])
        problems = []
        for url in order:
            try:
                answer = Api(url, timeout=self.timeout).discover()
            except (requests.RequestException, ApiError, ValueError) as err:
                problems.append(f"{url}: {err}")
                continue
            for node in answer["nodes"]:
                if node["url"] not in self.known:
                    self.known.append(node["url"])
            self.last = answer
            return answer
        raise NoLiveNode("; ".join(problems) or "no node known")

    def pick(self, avoid: Iterable[str] = ()) -> str:
        """The recommended node, or else the least-loaded live one not in ``avoid``."""
        shunned = {u.rstrip("/") for u in avoid}
        answer = self.discover(shunned)
        if answer["node"]["url"] not in shunned:
            return str(answer["node"]["url"])
        for node in answer["nodes"]:  # least loaded first
            if node["url"] not in shunned:
                return str(node["url"])
        raise NoLiveNode(f"every live node is avoided: {sorted(shunned)}")

    def move(self, api: Api, avoid: Iterable[str] = ()) -> str:
        """Point ``api`` (same token, same user) at a live node; returns its URL."""
        api.base_url = self.pick(avoid)
        return api.base_url
