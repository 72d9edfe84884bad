"""Prometheus metrics, served at /metrics.

Under gunicorn every worker writes its samples to PROMETHEUS_MULTIPROC_DIR (set by
config/gunicorn.conf.py) and a scrape of any worker aggregates them all, so a load
balancer may send the scrape anywhere. Queue depths and persist lag are read from the
engines at scrape time.

The per-message counts (messages sent, events delivered, delivery latency) are tallied
in the process and written to the metrics once a second, and before every scrape the
process answers (``flush``): each write of a multiprocess metric takes a lock and
updates the worker's mmap file, and one per message was ~2.8 % of a saturated
gateway worker. Another worker's last second may be missing from a scrape.
"""

from __future__ import annotations

import bisect
import functools
import os
import time
from collections.abc import Iterator
from typing import Any

import gevent
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

CONNECTIONS = Gauge("switchboard_connections", "Live event connections",
                    ["transport"], multiprocess_mode="livesum")
EVENTS_DELIVERED = Counter("switchboard_events_delivered_total",
                           "Events written to clients", ["transport"])
MESSAGES_SENT = Counter("switchboard_messages_sent_total", "Messages accepted (new, not retries)")
DELIVERY_LATENCY = Histogram(
    "switchboard_delivery_latency_seconds", "Message creation to its delivery to a member",
    ["transport"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RESETS = Counter("switchboard_resets_total", "Cursors answered with a reset", ["transport"])
FALLBACKS = Counter("switchboard_transport_fallbacks_total",
                    "Clients that fell back from one transport to another (client-reported)",
                    ["from_transport", "to_transport"])
BACKEND_ERRORS = Counter("switchboard_backend_errors_total",
                         "Requests failed by an unavailable backend", ["backend"])

_TRANSPORTS = ("poll", "longpoll", "sse", "ws")


@functools.cache
def _labelled(metric: MetricWrapperBase, transport: str) -> Any:
    """``metric.labels(transport)``, looked up once: the look-up (a lock and a dict)
    cost as much as the count, on every delivery. Safe across gunicorn's fork: a
    multiprocess value notices the new PID and writes to the worker's own file."""
    return metric.labels(transport)


class _Tally:
    """Counts and latencies waiting to be written to their metrics (see the module's
    description). Histogram buckets are filled as ``Histogram.observe`` fills them
    (each observation in the first bucket whose bound it does not exceed; the
    exposition sums them), through the child's bucket and sum values."""

    _EVERY = 1.0  # seconds between writes

    def __init__(self) -> None:
        self.counts: dict[Any, float] = {}  # metric child -> increment
        self.latencies: dict[str, list[float]] = {}  # transport -> seconds observed
        self._writer: gevent.Greenlet | None = None
        # A forked child (a gunicorn worker) starts with nothing tallied or scheduled.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self.counts, self.latencies, self._writer = {}, {}, None

    def count(self, child: Any, amount: float = 1.0) -> None:
        self.counts[child] = self.counts.get(child, 0.0) + amount
        self._schedule()

    def latency(self, transport: str, seconds: float) -> None:
        observed = self.latencies.get(transport)
        if observed is None:
            observed = self.latencies[transport] = []
        observed.append(seconds)
        self._schedule()

    def _schedule(self) -> None:
        if self._writer is None:
            self._writer = gevent.spawn_later(self._EVERY, self._write_later)

    def _write_later(self) -> None:
        self._writer = None
        self.flush()

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        latencies, self.latencies = self.latencies, {}
        for child, amount in counts.items():
            child.inc(amount)
        for transport, observed in latencies.items():
            child = _labelled(DELIVERY_LATENCY, transport)
            bounds = child._upper_bounds
            filled = [0] * len(bounds)
            for seconds in observed:
                filled[bisect.bisect_left(bounds, seconds)] += 1
            for bucket, number in zip(child._buckets, filled, strict=True):
                if number:
                    bucket.inc(number)
            child._sum.inc(sum(observed))


_TALLY = _Tally()
flush = _TALLY.flush


def message_sent() -> None:
    _TALLY.count(MESSAGES_SENT)


def observe_delivery(transport: str, user_id: int, events: list[dict[str, Any]]) -> None:
    """Count what a transport wrote to ``user_id``, and how long each message from
    someone else took to get there (a sender's own copy is held back when its client
    names its prefix, so it would time the hold, not the delivery)."""
    if not events:
        return
    _TALLY.count(_labelled(EVENTS_DELIVERED, transport), len(events))
    now_ms = time.time() * 1000
    for payload in events:
        kind = payload.get("type")
        if kind == "message.created" and payload["data"].get("sender_id") != user_id:
            _TALLY.latency(transport, max(0.0, (now_ms - payload["data"]["created_at"]) / 1000))
        elif kind == "reset":
            _labelled(RESETS, transport).inc()


def note_fallback(previous: str | None, transport: str) -> None:
    if previous in _TRANSPORTS and previous != transport:
        FALLBACKS.labels(previous, transport).inc()


class _EngineCollector(Collector):
    """Job queue depths and the persist backlog, asked of the engines per scrape."""

    def __init__(self, jobs: Any) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("switchboard_queue_depth",
                                   "Jobs or entries waiting, by queue", labels=["queue"])
        try:
            depths = self.jobs.depths()
        except Exception:  # a scrape must not fail because Redis is away
            BACKEND_ERRORS.labels("redis").inc()
            depths = {}
        for name, value in depths.items():
            family.add_metric([name], value)
        yield family


def render(jobs: Any) -> tuple[bytes, str]:
    flush()  # this process' tally at least is current
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    engine = _EngineCollector(jobs)
    registry.register(engine)
    try:
        return generate_latest(registry), CONTENT_TYPE_LATEST
    finally:
        registry.unregister(engine)
