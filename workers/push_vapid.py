"""The VAPID key pair (RFC 8292): generated on first start, then kept for good.

Browsers bind each push subscription to the public key they were given, so a new key
silently breaks every subscription. Hence: a configured key wins; otherwise one key is
generated once and stored (a data_dir file in the embedded mode; a Redis key written
with SET NX in Redis mode, so every node and worker shares the first one written), and a
stored key that cannot be read stops the process instead of being replaced.
"""

from __future__ import annotations

import base64
import logging
import os
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

log = logging.getLogger(__name__)

KEY_FILE = "vapid_private_key.pem"
# Beside the other keys under the deployment's prefix (no TTL: kept until deleted).
REDIS_KEY = "{prefix}:push:vapid-private-key"


def _new_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _parse(pem: str, where: str) -> Vapid02:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except ValueError as err:
        raise RuntimeError(f"the VAPID private key in {where} is unreadable ({err}); "
                           "restore it rather than generating a new one: a new key breaks "
                           "every browser's push subscription") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise RuntimeError(f"the VAPID private key in {where} is not a P-256 EC key")
    return Vapid02(key)


def _from_file(data_dir: str) -> str:
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, KEY_FILE)
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        pass
    pem = _new_pem()
    try:  # O_EXCL: a second process starting at the same moment reads the first's key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path) as handle:
            return handle.read()
    with os.fdopen(fd, "w") as handle:
        handle.write(pem)
    log.warning("generated the VAPID key pair for Web Push in %s (kept from now on)", path)
    return pem


def _from_redis(client: Any, prefix: str) -> str:
    key = REDIS_KEY.format(prefix=prefix)
    stored = client.get(key)
    if stored is None:
        if client.set(key, _new_pem(), nx=True):
            log.warning("generated the VAPID key pair for Web Push in Redis key %s; browsers "
                        "subscribed with an earlier key (if Redis lost it) must resubscribe",
                        key)
        stored = client.get(key)
    return stored.decode() if isinstance(stored, bytes) else str(stored)


def load_vapid(settings: Any, redis_client: Any = None) -> Vapid02:
    """The deployment's VAPID signer: configured, stored, or generated once and stored."""
    if settings.push_vapid_private_key:
        return _parse(settings.push_vapid_private_key, "SWITCHBOARD_PUSH_VAPID_PRIVATE_KEY")
    if redis_client is not None:
        return _parse(_from_redis(redis_client, settings.redis_prefix), "Redis")
    return _parse(_from_file(settings.data_dir), os.path.join(settings.data_dir, KEY_FILE))


def public_key(vapid: Vapid02) -> str:
    """The applicationServerKey browsers subscribe with: base64url, uncompressed point."""
    raw = vapid.public_key.public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
