"""Prometheus metrics, served at /metrics.

Under gunicorn every worker writes its samples to PROMETHEUS_MULTIPROC_DIR (set by
config/gunicorn.conf.py) and a scrape of any worker aggregates them all, so a load
balancer may send the scrape anywhere. Queue depths and persist lag are read from the
engines at scrape time.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from typing import Any

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


def observe_delivery(transport: str, user_id: int, events: list[dict[str, Any]]) -> None:
    """Count what a transport wrote to ``user_id``, and how long each message from
    someone else took to get there (a sender's own copy is held back when its client
    names its prefix, so it would time the hold, not the delivery)."""
    if not events:
        return
    _labelled(EVENTS_DELIVERED, transport).inc(len(events))
    now_ms = time.time() * 1000
    for payload in events:
        kind = payload.get("type")
        if kind == "message.created" and payload["data"].get("sender_id") != user_id:
            _labelled(DELIVERY_LATENCY, transport).observe(
                max(0.0, (now_ms - payload["data"]["created_at"]) / 1000))
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
