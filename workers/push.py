"""PushProvider: one way of reaching a user's device (Web Push, webhook; FCM/APNs later).

Contract: ``send`` makes one attempt, bounded by the provider's timeout, and reports an
:class:`Outcome` instead of raising for anything the target or the network did. The
caller (workers/notify.py) owns retries, backoff and removing gone targets, so every
provider gets them the same way and implements only its own wire format.

A provider's ``send`` may run several times for one notification (retries): each
attempt carries the same ``Notification.id`` so receivers can de-duplicate.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from typing import Any, ClassVar

import requests
from requests.adapters import HTTPAdapter

# Web Push payloads must fit one 4 KB record once encrypted; 200 characters of even
# 4-byte UTF-8 keep the whole notification far below that.
PREVIEW_CHARS = 200


class Outcome(str, enum.Enum):
    DELIVERED = "delivered"  # 2xx: the provider took it
    GONE = "gone"  # 404/410: the subscription or endpoint no longer exists; remove it
    RETRY = "retry"  # 5xx, 408, 429, timeout, connection error: try again later
    REJECTED = "rejected"  # any other 4xx, a malformed target: retrying will not help


@dataclasses.dataclass(frozen=True)
class PushTarget:
    """A registered device, detached from the database row."""
    id: int
    user_id: int
    kind: str
    endpoint: str
    p256dh: str | None = None
    auth: str | None = None
    secret: str | None = None


@dataclasses.dataclass(frozen=True)
class Notification:
    """What a device is told about new messages; the same for every device of a user."""
    id: str  # "<user>:<message id>", identical on every attempt and device
    user_id: int
    conversation_id: int
    conversation_title: str | None
    message_id: str
    sender_id: int
    sender_name: str
    count: int  # messages since this user's previous push, this one included
    sent_at: int  # the message's created_at, unix ms
    preview: str | None  # None when the user turned previews off: no text at all

    def to_json(self) -> dict[str, Any]:
        body = {"type": "message", **dataclasses.asdict(self)}
        if self.preview is None:
            del body["preview"]
        return body


def outcome_for_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (404, 410):
        return Outcome.GONE
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.REJECTED


def http_session(pool_size: int) -> requests.Session:
    """One keep-alive pool per provider, sized for the greenlets or threads sending."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class PushProvider(abc.ABC):
    kind: ClassVar[str]

    @abc.abstractmethod
    def send(self, target: PushTarget, notification: Notification) -> Outcome:
        """One bounded attempt to hand ``notification`` to ``target``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def build_providers(settings: Any, vapid: Any) -> dict[str, PushProvider]:
    """Every provider this deployment speaks, by device kind."""
    from workers.push_webhook import WebhookProvider
    from workers.push_webpush import WebPushProvider

    providers: list[PushProvider] = [
        WebPushProvider(vapid, settings.push_vapid_subject, timeout=settings.push_timeout,
                        ttl=settings.push_ttl, pool_size=settings.push_concurrency),
        WebhookProvider(timeout=settings.push_timeout, pool_size=settings.push_concurrency)]
    return {p.kind: p for p in providers}
