"""``GET /v1/discover``: which gateway node a client should connect (or reconnect) to.

Public, like /v1/health: a client whose node just died or is draining asks before it
does anything else, possibly before it holds a valid token for the new node's login
flow, and the answer holds no user data (node addresses a client can reach anyway and
their connection counts).
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from gateway.discovery import Discovery, discovery
from gateway.errors import unavailable

bp = Blueprint("discover", __name__, url_prefix="/v1")


@bp.get("/discover")
def discover():
    nodes = discovery(current_app).nodes(request.host_url)
    best = Discovery.recommend(nodes)
    if best is None:
        # Only a draining node with no live peer gets here: nobody to send clients to.
        raise unavailable("no live gateway node; retry shortly")
    response = jsonify({"node": best.to_json(), "nodes": [n.to_json() for n in nodes],
                        "ttl": discovery(current_app).ttl})
    response.headers["Cache-Control"] = "no-store"  # loads change by the second
    return response
