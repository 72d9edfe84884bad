"""Push targets (devices) and per-conversation mute, apart from HTTP.

Registration is validated strictly before anything is written: a Web Push subscription
must carry a valid P-256 key and a 16-byte auth secret, and every URL must be https
(unless ``push_allow_insecure_targets``) and, by default, not point at this machine or a
private network (the gateway's workers would otherwise POST wherever a user asks).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import secrets
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from gateway import validation as v
from gateway.conversations import require_member, view
from gateway.errors import ApiError, bad_request, conflict, not_found
from gateway.services import services
from storage.db import db
from storage.models import Device, DeviceKind

_MAX_URL = 2048
_SUBSCRIPTION_FIELDS = {"endpoint", "expirationTime", "keys"}


def _b64url(raw: Any, name: str, length: int) -> bytes:
    if not isinstance(raw, str) or not raw or len(raw) > 200:
        raise bad_request(f"'{name}' must be a base64url string", "invalid_field", field=name)
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise bad_request(f"'{name}' is not valid base64url", "invalid_field",
                          field=name) from None
    if len(data) != length:
        raise bad_request(f"'{name}' must decode to {length} bytes", "invalid_field",
                          field=name)
    return data


def _check_url(raw: Any, name: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise bad_request(f"'{name}' must be a URL", "invalid_field", field=name)
    if len(raw) > _MAX_URL:
        raise bad_request(f"'{name}' is longer than {_MAX_URL} characters", "too_long",
                          field=name, max_length=_MAX_URL)
    insecure_ok = services().settings.push_allow_insecure_targets
    try:
        parts = urlsplit(raw)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise bad_request(f"'{name}' is not a valid URL", "invalid_field", field=name) from None
    if not raw.isascii() or not raw.isprintable() or " " in raw:
        raise bad_request(f"'{name}' must be an ASCII URL without spaces", "invalid_field",
                          field=name)
    schemes = ("https", "http") if insecure_ok else ("https",)
    if parts.scheme not in schemes or not host:
        raise bad_request(f"'{name}' must be an {' or '.join(schemes)} URL", "invalid_field",
                          field=name)
    if parts.username or parts.password or parts.fragment:
        raise bad_request(f"'{name}' must not carry credentials or a fragment",
                          "invalid_field", field=name)
    if not insecure_ok and _is_internal(host):
        raise bad_request(f"'{name}' must not point at a local or private address",
                          "invalid_field", field=name)
    return raw


def _is_internal(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: resolving it here would not stop DNS rebinding anyway
    return not address.is_global


def _webpush(body: dict[str, Any]) -> dict[str, Any]:
    sub = body.get("subscription")
    if not isinstance(sub, dict):
        raise bad_request("'subscription' is required: the browser's PushSubscription "
                          "JSON", "missing_field", field="subscription")
    unknown = set(sub) - _SUBSCRIPTION_FIELDS
    if unknown:
        raise bad_request(f"unknown subscription fields: {', '.join(sorted(unknown))}",
                          "unknown_field")
    expiration = sub.get("expirationTime")
    if expiration is not None and (isinstance(expiration, bool)
                                   or not isinstance(expiration, (int, float))):
        raise bad_request("'expirationTime' must be null or a number", "invalid_field",
                          field="expirationTime")
    keys = sub.get("keys")
    if not isinstance(keys, dict) or set(keys) != {"p256dh", "auth"}:
        raise bad_request("'keys' must hold exactly 'p256dh' and 'auth'", "invalid_field",
                          field="keys")
    point = _b64url(keys["p256dh"], "p256dh", 65)
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise bad_request("'p256dh' is not a P-256 public key", "invalid_field",
                          field="p256dh") from None
    _b64url(keys["auth"], "auth", 16)
    return {"endpoint": _check_url(sub.get("endpoint"), "endpoint"),
            "p256dh": keys["p256dh"].rstrip("="), "auth": keys["auth"].rstrip("=")}


def parse_registration(body: dict[str, Any]) -> dict[str, Any]:
    """The validated fields of a POST /v1/devices body."""
    kind = v.string(body, "kind", max_len=16)
    label = v.string(body, "label", required=False, min_len=1, max_len=64, strip=True)
    if kind == DeviceKind.WEBPUSH.value:
        allowed, fields = {"kind", "label", "subscription"}, _webpush(body)
    elif kind == DeviceKind.WEBHOOK.value:
        allowed, fields = {"kind", "label", "url"}, {"endpoint": _check_url(body.get("url"),
                                                                           "url")}
    else:
        raise bad_request("'kind' must be 'webpush' or 'webhook'", "invalid_field",
                          field="kind")
    unknown = set(body) - allowed
    if unknown:
        raise bad_request(f"unknown fields: {', '.join(sorted(unknown))}", "unknown_field")
    return {"kind": kind, "label": label, **fields}


def register(user_id: int, fields: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Add a device, or update the one with this endpoint; (view, created)."""
    endpoint_hash = hashlib.sha256(fields["endpoint"].encode()).hexdigest()
    device = db.session.scalar(select(Device).where(Device.user_id == user_id,
                                                    Device.endpoint_hash == endpoint_hash))
    created = device is None
    if device is None:
        count = db.session.scalar(select(func.count()).select_from(Device).where(
            Device.user_id == user_id))
        cap = services().settings.max_devices_per_user
        if count >= cap:
            raise ApiError(422, "too_many_devices", f"at most {cap} devices per user")
    if fields["kind"] == DeviceKind.WEBPUSH.value:
        # One browser, one owner: whoever subscribed it last gets its pushes.
        db.session.execute(delete(Device).where(Device.endpoint_hash == endpoint_hash,
                                                Device.user_id != user_id))
    if device is None:
        device = Device(user_id=user_id, endpoint_hash=endpoint_hash)
        db.session.add(device)
    device.kind = fields["kind"]
    device.endpoint = fields["endpoint"]
    device.label = fields["label"]
    device.p256dh = fields.get("p256dh")
    device.auth = fields.get("auth")
    # Registering a webhook (again) issues a new secret, shown only in this answer.
    device.secret = (secrets.token_urlsafe(32)
                     if fields["kind"] == DeviceKind.WEBHOOK.value else None)
    try:
        db.session.commit()
    except IntegrityError:  # the same endpoint registered concurrently
        db.session.rollback()
        raise conflict("this device is being registered by another request; retry") from None
    result = device.view()
    if device.secret:
        result["secret"] = device.secret
    return result, created


def list_devices(user_id: int) -> list[dict[str, Any]]:
    return [d.view() for d in db.session.scalars(
        select(Device).where(Device.user_id == user_id).order_by(Device.id))]


def remove(user_id: int, device_id: int) -> None:
    device = db.session.get(Device, device_id)
    if device is None or device.user_id != user_id:
        raise not_found("device")
    db.session.delete(device)
    db.session.commit()


def set_muted(user_id: int, conversation_id: int, muted: bool) -> dict[str, Any]:
    conversation, membership = require_member(conversation_id, user_id)
    membership.muted = muted
    db.session.commit()
    return {**view(conversation), "muted": membership.muted}
