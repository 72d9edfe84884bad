"""Push: devices, the VAPID public key, and muting a conversation."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from gateway import devices
from gateway import validation as v
from gateway.auth import authenticated
from gateway.errors import bad_request
from gateway.services import services

bp = Blueprint("push", __name__, url_prefix="/v1")


@bp.post("/devices")
@authenticated
def register_device():
    fields = devices.parse_registration(v.json_body())
    device, created = devices.register(g.user_id, fields)
    return jsonify(device), 201 if created else 200


@bp.get("/devices")
@authenticated
def list_devices():
    return jsonify({"devices": devices.list_devices(g.user_id)})


@bp.delete("/devices/<int:device_id>")
@authenticated
def delete_device(device_id: int):
    devices.remove(g.user_id, device_id)
    return "", 204


@bp.get("/push/vapid-public-key")
@authenticated
def vapid_public_key():
    return jsonify({"public_key": services().notifier.vapid_public_key})


@bp.patch("/conversations/<int:conversation_id>")
@authenticated
def update_conversation(conversation_id: int):
    """Per-member settings of a conversation; today only ``muted`` (no pushes)."""
    body = v.json_body()
    unknown = set(body) - {"muted"}
    if unknown:
        raise bad_request(f"unknown fields: {', '.join(sorted(unknown))}", "unknown_field")
    muted = v.boolean(body, "muted")
    return jsonify(devices.set_muted(g.user_id, conversation_id, bool(muted)))
