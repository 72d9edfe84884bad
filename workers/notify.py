"""Notification jobs: step 5 of the message flow (push to members with no live connection).

:func:`notify_offline` is the whole job. The embedded mode runs it in the gateway's
greenlet pool (gateway/notifications.py); Redis mode queues :func:`run_notify_job` on
RQ for ``python -m workers``. Either way it runs after the send was acknowledged and
never on the send path.

Per recipient: muted conversation -> nothing; no devices -> nothing; then the
coalescing window is claimed (one push per user per ``push_window``) and each device
gets one notification, retried with backoff on 5xx/timeouts, removed on 404/410.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from rq import Queue
from sqlalchemy import create_engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from storage.models import Conversation, Device, Membership, User
from workers.notify_windows import CoalescingWindows, MemoryWindows, RedisWindows
from workers.push import (
    PREVIEW_CHARS,
    Notification,
    Outcome,
    PushProvider,
    PushTarget,
    build_providers,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class NotifyContext:
    """What a notification job needs, built once per process."""
    settings: Settings
    sessions: Callable[[], Session]
    windows: CoalescingWindows
    providers: dict[str, PushProvider]
    sleep: Callable[[float], None] = time.sleep

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()


def build_context(settings: Settings, redis_client: Any = None) -> NotifyContext:
    """Its own small SQL pool: a slow push must never hold a request's connection."""
    from storage.db import engine_options
    from storage.engines import database_url
    from workers.push_vapid import load_vapid

    url = database_url(settings)
    options = {**engine_options(url), "pool_size": 2, "max_overflow": 8}
    engine = create_engine(url, **options)
    windows: CoalescingWindows = (RedisWindows(redis_client, settings.redis_prefix)
                                  if redis_client is not None else MemoryWindows())
    return NotifyContext(settings=settings, sessions=sessionmaker(engine, expire_on_commit=False),
                         windows=windows,
                         providers=build_providers(settings, load_vapid(settings, redis_client)))


def _recipients(ctx: NotifyContext, message: dict[str, Any], user_ids: list[int]) -> tuple[
        dict[int, list[PushTarget]], dict[int, bool], str, str | None]:
    """(devices by unmuted recipient, previews by user, sender name, conversation title)."""
    conversation_id = int(message["conversation_id"])
    with ctx.sessions() as session:
        muted = set(session.scalars(select(Membership.user_id).where(
            Membership.conversation_id == conversation_id,
            Membership.user_id.in_(user_ids), Membership.muted.is_(True))))
        # Members only: someone removed since the send gets nothing.
        members = set(session.scalars(select(Membership.user_id).where(
            Membership.conversation_id == conversation_id, Membership.user_id.in_(user_ids))))
        wanted = [u for u in user_ids if u in members and u not in muted]
        devices: dict[int, list[PushTarget]] = {}
        for row in session.scalars(select(Device).where(Device.user_id.in_(wanted))
                                   .order_by(Device.id)):
            devices.setdefault(row.user_id, []).append(PushTarget(
                id=row.id, user_id=row.user_id, kind=row.kind, endpoint=row.endpoint,
                p256dh=row.p256dh, auth=row.auth, secret=row.secret))
        users = {u.id: u for u in session.scalars(select(User).where(
            User.id.in_([*devices, int(message["sender_id"])])))}
        conversation = session.get(Conversation, conversation_id)
        sender = users.get(int(message["sender_id"]))
        return (devices, {u: users[u].push_previews for u in devices if u in users},
                sender.display_name if sender else "", conversation.title if conversation
                else None)


def deliver(ctx: NotifyContext, target: PushTarget, notification: Notification) -> Outcome:
    """One notification to one device: retries with doubling, jittered pauses."""
    provider = ctx.providers.get(target.kind)
    if provider is None:
        return Outcome.REJECTED
    settings = ctx.settings
    outcome = Outcome.RETRY
    for attempt in range(settings.push_retries + 1):
        outcome = provider.send(target, notification)
        if outcome is not Outcome.RETRY:
            break
        if attempt < settings.push_retries:
            ctx.sleep(settings.push_retry_backoff * 2 ** attempt * random.uniform(0.8, 1.2))
    return outcome


def notify_offline(ctx: NotifyContext, message: dict[str, Any], user_ids: list[int]) -> int:
    """Push ``message`` to these members (none of them connected); returns pushes made."""
    age = time.time() - int(message["created_at"]) / 1000
    if age > ctx.settings.push_max_age:
        log.info("dropped a notification job %.0f s old", age)
        return 0
    devices, previews, sender_name, title = _recipients(ctx, message, user_ids)
    sent = 0
    for user_id, targets in devices.items():
        count = ctx.windows.arrive(user_id, ctx.settings.push_window)
        if not count:
            continue  # this user's push for the current window already went out
        text = str(message["text"])
        notification = Notification(
            id=f"{user_id}:{message['id']}", user_id=user_id,
            conversation_id=int(message["conversation_id"]), conversation_title=title,
            message_id=str(message["id"]), sender_id=int(message["sender_id"]),
            sender_name=sender_name, count=count, sent_at=int(message["created_at"]),
            preview=text[:PREVIEW_CHARS] if previews.get(user_id, True) else None)
        for target in targets:
            outcome = deliver(ctx, target, notification)
            if outcome is Outcome.DELIVERED:
                sent += 1
            elif outcome is Outcome.GONE:
                _remove(ctx, target)
            else:
                log.warning("push to device %d (%s) failed: %s", target.id, target.kind,
                            outcome.value)
    return sent


def _remove(ctx: NotifyContext, target: PushTarget) -> None:
    with ctx.sessions() as session:
        session.execute(delete(Device).where(Device.id == target.id,
                                             Device.endpoint == target.endpoint))
        session.commit()
    log.info("removed device %d of user %d: its endpoint is gone", target.id, target.user_id)


# --- Redis mode: RQ ----------------------------------------------------------------------

def notify_queue_name(settings: Settings) -> str:
    return f"{settings.redis_prefix}-notify"


_worker_context: list[NotifyContext] = []


def worker_context() -> NotifyContext:
    """This worker process' context, built on first use from SWITCHBOARD_* settings."""
    if not _worker_context:
        from storage.engines import redis_client

        settings = Settings.from_env()
        _worker_context.append(build_context(settings, redis_client(settings)))
    return _worker_context[0]


def run_notify_job(message: dict[str, Any], user_ids: list[int]) -> int:
    """The RQ job. No RQ retries: a job abandoned by a killed worker is not run again
    (its window was claimed before sending: at most one push per window)."""
    return notify_offline(worker_context(), message, user_ids)


def enqueue_notify(queue: Queue, message: dict[str, Any], user_ids: list[int]) -> None:
    queue.enqueue(run_notify_job, message, user_ids, result_ttl=0, failure_ttl=3600,
                  job_timeout=600)
