"""Presence lookups."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from gateway.auth import authenticated
from gateway.errors import bad_request
from gateway.services import services

bp = Blueprint("presence", __name__, url_prefix="/v1")

_MAX_LOOKUP = 200


@bp.get("/presence")
@authenticated
def presence():
    raw = request.args.get("user_ids", "")
    parts = [p for p in raw.split(",") if p.strip()]
    if not parts or len(parts) > _MAX_LOOKUP or not all(
            p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise bad_request(f"'user_ids' must be 1-{_MAX_LOOKUP} comma-separated user ids",
                          "invalid_parameter", parameter="user_ids")
    ids = list(dict.fromkeys(int(p) for p in parts))
    status = services().presence.status(ids)
    return jsonify({"presence": [{"user_id": u, "online": s.online, "last_seen": s.last_seen}
                                 for u, s in status.items()]})
