"""Webhook provider: an HTTP POST signed with the device's secret, for integrators' gateways.

Signature: ``X-Switchboard-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." +
body)>`` with ``X-Switchboard-Timestamp`` (unix seconds) sent beside it; receivers check
it with :func:`verify` (docs/push.md has the same recipe as a standalone snippet).
Signing the timestamp with the body stops replays of an old delivery past ``max_age``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests

from workers.push import (
    Notification,
    Outcome,
    PushProvider,
    PushTarget,
    http_session,
    outcome_for_status,
)

SIGNATURE_HEADER = "X-Switchboard-Signature"
TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
DELIVERY_HEADER = "X-Switchboard-Delivery"  # the notification id: same on every retry
# Receivers reject deliveries signed longer ago than this (clock skew included).
MAX_AGE = 300


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, *,
           max_age: float = MAX_AGE, now: float | None = None) -> bool:
    """The receiver's check: a fresh timestamp and a matching signature over both."""
    if not timestamp or not signature or not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > max_age:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookProvider(PushProvider):
    kind = "webhook"

    def __init__(self, *, timeout: float = 5.0, pool_size: int = 10) -> None:
        self.timeout = timeout
        self.http = http_session(pool_size)

    def send(self, target: PushTarget, notification: Notification) -> Outcome:
        if not target.secret:
            return Outcome.REJECTED
        body = json.dumps({"device_id": target.id, **notification.to_json()},
                          ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))  # per attempt: a retry is signed afresh
        headers = {"Content-Type": "application/json",
                   TIMESTAMP_HEADER: timestamp,
                   SIGNATURE_HEADER: sign(target.secret, timestamp, body),
                   DELIVERY_HEADER: notification.id,
                   "User-Agent": "Switchboard-Webhook/1"}
        try:
            response = self.http.post(target.endpoint, data=body, headers=headers,
                                      timeout=self.timeout, allow_redirects=False)
        except (requests.Timeout, requests.ConnectionError):
            return Outcome.RETRY
        except requests.RequestException:  # an unusable URL: retrying cannot fix it
            return Outcome.REJECTED
        response.close()
        return outcome_for_status(response.status_code)

    def close(self) -> None:
        self.http.close()
