"""Run a Switchboard worker: ``python -m workers`` (same SWITCHBOARD_* settings as the gateway).

An RQ SimpleWorker: jobs run in this process, without RQ's default fork per job, so a
drain job reuses one Cassandra session and one Redis pool. It serves the persist queue
first, then the notify queue (push notifications, workers/notify.py). Beside it a
thread checks every second for persist backlog nobody has queued a job for (a worker
killed mid-batch, a job lost with a restarted Redis) and queues a drain for it.
"""

from __future__ import annotations

import logging
import threading
import time

from rq import Queue, SimpleWorker

from config import Settings
from storage.engines import rq_connection
from workers.jobs import enqueue_drain, persist_queue_name, worker_engines
from workers.notify import notify_queue_name, worker_context

log = logging.getLogger("switchboard.worker")


def watch_backlog(queue: Queue, interval: float, stop: threading.Event) -> None:
    buffer = worker_engines()["buffer"]
    while not stop.wait(interval):
        try:
            if len(queue) > 0:
                continue
            for shard, count in buffer.backlog().items():
                if count:
                    enqueue_drain(queue, shard)
        except Exception:  # Redis away: keep watching, the worker reconnects too
            log.exception("backlog check failed")


def main() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    if not settings.redis_url:
        raise SystemExit("workers need SWITCHBOARD_REDIS_URL (the embedded mode runs jobs "
                         "inside the gateway)")
    connection = rq_connection(settings)
    queue = Queue(persist_queue_name(settings), connection=connection)
    # Listed in priority order: persisting history goes before pushes.
    notify = Queue(notify_queue_name(settings), connection=connection)
    worker_engines()  # connect before taking jobs: fail fast on a bad configuration
    worker_context()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_backlog, args=(queue, 1.0, stop), daemon=True)
    watcher.start()
    try:
        SimpleWorker([queue, notify], connection=connection).work(with_scheduler=True)
    finally:
        stop.set()
        time.sleep(0)


if __name__ == "__main__":
    main()
