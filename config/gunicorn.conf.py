"""gunicorn settings for Switchboard (override any of them on the command line).

Long-lived connections (SSE, WebSocket, long-poll) each hold a greenlet, so one gevent
worker serves thousands of clients; worker_connections caps that number.
"""

import os

bind = os.environ.get("SWITCHBOARD_BIND", "127.0.0.1:8080")
# gunicorn's gevent worker, sending each response's head with its body (see the module).
worker_class = "config.gunicorn_worker.GeventWorker"
# The memory engine lives in one process: several workers need Redis to share state.
workers = int(os.environ.get("SWITCHBOARD_WORKERS", "1" if not os.environ.get(
    "SWITCHBOARD_REDIS_URL") else "2"))
worker_connections = int(os.environ.get("SWITCHBOARD_WORKER_CONNECTIONS", "10000"))
# gevent workers heartbeat from their event loop; a worker silent this long is stuck.
timeout = 30
# Idle keep-alive connections between long-polls; above the clients' reconnect gap.
keepalive = 75
# Longest a SIGTERM'd worker waits for its clients to leave. The drain tells every stream
# to reconnect elsewhere at once and closes idle keep-alive connections, so a worker
# normally exits within a second or two; this only bounds requests still in progress.
graceful_timeout = int(os.environ.get("SWITCHBOARD_GRACEFUL_TIMEOUT", "30"))
# No preload: each worker builds its own engines after fork (sockets, Cassandra sessions).
preload_app = False
accesslog = os.environ.get("SWITCHBOARD_ACCESS_LOG") or None
loglevel = os.environ.get("SWITCHBOARD_LOG_LEVEL", "info")


# Prometheus samples of every worker go to files here, so a scrape of any worker reports
# the whole node (gateway/metrics.py). Emptied at start: old workers' files would count.
metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(os.path.abspath(os.environ.get("SWITCHBOARD_DATA_DIR", "./var")), "metrics"))


def child_exit(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_fork(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    # Every worker needs its own random state (ids, tickets) after fork.
    import random

    random.seed()


def post_worker_init(worker):
    # After gunicorn installed its signal handlers and loaded the app, before it serves:
    # announce this worker in discovery and chain the graceful drain to its SIGTERM
    # handler (gateway/drain.py explains what gunicorn alone would do).
    from gateway.drain import install

    install(worker)


def worker_exit(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    # Leave discovery and release the leased worker id now rather than after their TTLs.
    from gateway.drain import withdraw
    from gateway.metrics import flush

    withdraw(worker)
    flush()  # the last second's counts, which the metrics' tally still holds


def on_starting(server):
    import shutil

    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir, exist_ok=True)
    if server.cfg.workers > 1 and not os.environ.get("SWITCHBOARD_REDIS_URL"):
        raise SystemExit("Switchboard: the embedded memory engine serves one worker; set "
                         "SWITCHBOARD_REDIS_URL to run several (SWITCHBOARD_WORKERS).")

# gunicorn 27's control socket defaults to one path per user: several gateways on one
# host (tests, a node per port) would fight over it.
control_socket_disable = True
