"""RQ job functions. They run in ``python -m workers`` processes (RQ SimpleWorker).

Each worker process builds its engines once, from the same SWITCHBOARD_* settings as
the gateway, and reuses them for every job: no fork and no reconnect per job.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from rq import Queue, Retry

from config import Settings

log = logging.getLogger(__name__)


def persist_queue_name(settings: Settings) -> str:
    """Named by the Redis prefix, so deployments (and tests) sharing a Redis stay apart."""
    return f"{settings.redis_prefix}-persist"

# A failing history store (Cassandra down) is retried with growing pauses; the entries
# stay pending in Redis meanwhile, and the worker's own backlog check keeps retrying
# after these run out.
_RETRY = Retry(max=8, interval=[1, 2, 4, 8, 15, 30, 30, 30])

_engines: dict[str, Any] = {}


def worker_engines() -> dict[str, Any]:
    """History store and persist buffer of this worker process, built on first use."""
    if not _engines:
        from storage.engines import build_history, build_persist_buffer, redis_client

        settings = Settings.from_env()
        client = redis_client(settings)
        _engines.update(settings=settings, history=build_history(settings),
                        buffer=build_persist_buffer(settings, client),
                        consumer=f"{socket.gethostname()}-{os.getpid()}")
    return _engines


def drain_persist(shard: int) -> int:
    """Persist everything pending on one shard of the persist stream."""
    engines = worker_engines()
    settings: Settings = engines["settings"]
    count = engines["buffer"].drain(engines["history"], shard, engines["consumer"],
                                    batch=settings.persist_batch,
                                    claim_idle_ms=int(settings.persist_claim_idle * 1000))
    if count:
        log.info("persisted %d messages from shard %d", count, shard)
    return count


def enqueue_drain(queue: Queue, shard: int) -> None:
    queue.enqueue(drain_persist, shard, retry=_RETRY, result_ttl=0, failure_ttl=3600,
                  job_timeout=600)
