"""Local stand-ins for push services: real HTTP servers on loopback that speak the protocols.

:class:`Receiver` records every POST and answers with a scripted status (or hangs).
:func:`open_webpush_request` is what a Web Push service and browser do with a request:
check the VAPID JWT (RFC 8292) and decrypt the aes128gcm payload (RFC 8291) with the
subscription's private key and auth secret.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from requests.structures import CaseInsensitiveDict


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Recorded:
    path: str
    headers: CaseInsensitiveDict  # header names arrive in any case (pywebpush: lower)
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP server thread. ``statuses`` are answered in turn (the last one repeats);
    ``hang`` seconds of silence before answering simulate a stuck provider."""

    def __init__(self, statuses: tuple[int, ...] = (201,), hang: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.hang = hang
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._release = threading.Event()  # ends every hang at once on close()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(Recorded(
                        self.path, CaseInsensitiveDict(self.headers.items()), body))
                    status = (receiver.statuses.pop(0) if len(receiver.statuses) > 1
                              else receiver.statuses[0])
                if receiver.hang:
                    receiver._release.wait(receiver.hang)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender gave up (its timeout) first
                    pass

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str = "/hook") -> str:
        return self.origin + path

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def wait_for(self, count: int, timeout: float) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while self.count() < count and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


class Subscription:
    """What a browser's PushManager.subscribe() creates: a P-256 key pair, an auth secret."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth_secret = os.urandom(16)

    def to_json(self) -> dict[str, Any]:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": b64url(point), "auth": b64url(self.auth_secret)}}


def check_vapid(authorization: str, public_key: str, endpoint_origin: str) -> dict[str, Any]:
    """RFC 8292: ``vapid t=<JWT>, k=<public key>``; the JWT is ES256-signed by that key."""
    scheme, _, params = authorization.partition(" ")
    assert scheme.lower() == "vapid", authorization
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert fields["k"] == public_key, "signed with a key other than the served one"
    head_b64, claims_b64, signature_b64 = fields["t"].split(".")
    header = json.loads(b64url_decode(head_b64))
    assert header["alg"] == "ES256" and header.get("typ", "JWT") == "JWT", header
    signature = b64url_decode(signature_b64)
    assert len(signature) == 64  # JWS ES256: raw r || s
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                       b64url_decode(fields["k"]))
    key.verify(encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                    int.from_bytes(signature[32:], "big")),
               f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    claims = json.loads(b64url_decode(claims_b64))
    now = time.time()
    assert claims["aud"] == endpoint_origin, claims
    assert now < claims["exp"] <= now + 24 * 3600, claims  # RFC 8292: at most 24 h ahead
    assert claims.get("sub", "").startswith(("mailto:", "https:")), claims
    return claims


def open_webpush_request(request: Recorded, subscription: Subscription, public_key: str,
                         endpoint_origin: str) -> dict[str, Any]:
    """Check one delivery like a push service and a browser would; the decrypted JSON."""
    check_vapid(request.headers["Authorization"], public_key, endpoint_origin)
    assert request.headers["Content-Encoding"] == "aes128gcm"
    assert int(request.headers["TTL"]) > 0
    plaintext = http_ece.decrypt(request.body, private_key=subscription.private_key,
                                 auth_secret=subscription.auth_secret, version="aes128gcm")
    return json.loads(plaintext)
