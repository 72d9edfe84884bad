"""Web Push provider: aes128gcm payload encryption (RFC 8291) and VAPID (RFC 8292).

pywebpush encrypts the payload for the subscription's keys and posts it with our
requests session; py_vapid signs the JWT. Every request has a connect and read timeout.
"""

from __future__ import annotations

import json
import time
from typing import cast
from urllib.parse import urlsplit

import requests
from py_vapid import Vapid02
from pywebpush import WebPusher, WebPushException

from workers.push import (
    Notification,
    Outcome,
    PushProvider,
    PushTarget,
    http_session,
    outcome_for_status,
)

# RFC 8292 caps a VAPID token's lifetime at 24 h; 12 h leaves room for clock skew. Tokens
# are reused per push service until an hour before they expire (signing costs CPU).
_TOKEN_LIFETIME = 12 * 3600
_TOKEN_REUSE_MARGIN = 3600


def audience(endpoint: str) -> str:
    """The push service's origin: the JWT's ``aud``."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


class WebPushProvider(PushProvider):
    kind = "webpush"

    def __init__(self, vapid: Vapid02, subject: str, *, timeout: float = 5.0,
                 ttl: int = 86400, pool_size: int = 10) -> None:
        self.vapid = vapid
        self.subject = subject
        self.timeout = timeout
        self.ttl = ttl
        self.http = http_session(pool_size)
        self._tokens: dict[str, tuple[float, dict[str, str]]] = {}

    def _authorization(self, endpoint: str) -> dict[str, str]:
        aud = audience(endpoint)
        now = time.time()
        cached = self._tokens.get(aud)
        if cached is None or cached[0] - _TOKEN_REUSE_MARGIN < now:
            exp = int(now) + _TOKEN_LIFETIME
            cached = (exp, self.vapid.sign({"aud": aud, "sub": self.subject, "exp": exp}))
            self._tokens[aud] = cached
        return dict(cached[1])

    def send(self, target: PushTarget, notification: Notification) -> Outcome:
        if not (target.p256dh and target.auth):
            return Outcome.REJECTED
        headers = self._authorization(target.endpoint)
        # RFC 8030 Topic: a newer push for this conversation replaces one still queued
        # at the push service for an offline device (and collapses retries of this one).
        headers["Topic"] = f"c{notification.conversation_id}"
        headers["Urgency"] = "high"
        body = json.dumps(notification.to_json(), ensure_ascii=False, separators=(",", ":"))
        try:
            pusher = WebPusher({"endpoint": target.endpoint,
                                "keys": {"p256dh": target.p256dh, "auth": target.auth}},
                               requests_session=self.http)
            response = pusher.send(data=body.encode(), headers=headers, ttl=self.ttl,
                                   timeout=self.timeout, content_encoding="aes128gcm")
        except (requests.Timeout, requests.ConnectionError):
            return Outcome.RETRY
        except (WebPushException, requests.RequestException, ValueError):
            return Outcome.REJECTED  # keys or URL the library cannot use: will not improve
        response = cast(requests.Response, response)  # a str only when curl=True
        response.close()
        return outcome_for_status(response.status_code)

    def close(self) -> None:
        self.http.close()
