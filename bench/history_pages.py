"""Scenario 6: history pages in a conversation with 1,000,000 messages.

    .venv/bin/python -m bench.history_pages --store sqlite [--messages 1000000]
    .venv/bin/python -m bench.history_pages --store cassandra [--hosts 127.0.0.1:9142]

Writes the rows straight through the HistoryStore (not the API), spread evenly over
the ~330 days since the id epoch (so Cassandra sees ~33 ten-day buckets, like a busy
group's year), then times the latest page and a deep ``before`` page (the 100 messages
before the 10th message) ``--reads`` times each. Prints one JSON line; --out appends it.
Without --hosts a throwaway Cassandra node is started with scripts/cassandra.sh.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench import procstat
from storage.history import HistoryStore, Message
from storage.ids import EPOCH_MS, SEQUENCE_BITS, WORKER_BITS

CONVERSATION = 1


def message_id(ms: int, seq: int) -> int:
    return ((ms - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)) | (7 << SEQUENCE_BITS) | (
        seq & ((1 << SEQUENCE_BITS) - 1))


def fill(store: HistoryStore, count: int, batch: int) -> tuple[list[int], float]:
    start_ms = EPOCH_MS + 24 * 3600 * 1000
    step = max(1, (int(time.time() * 1000) - 3600_000 - start_ms) // count)
    ids: list[int] = []
    started = time.monotonic()
    for first in range(0, count, batch):
        rows = []
        for n in range(first, min(count, first + batch)):
            ms = start_ms + n * step
            mid = message_id(ms, n)
            ids.append(mid)
            rows.append(Message(mid, CONVERSATION, n + 1, 1 + n % 2, f"h{n}",
                                f"message {n} " + "x" * 60, ms))
        store.store(rows)
        if first % 100_000 == 0:
            print(f"written {first:,}", flush=True)
    return ids, time.monotonic() - started


def timed(fn, reads: int) -> dict:
    samples = []
    for _ in range(reads):
        t0 = time.perf_counter()
        page = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    assert len(page) == 100 or len(page) == 9, len(page)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 2),
            "min_ms": round(samples[0], 2), "max_ms": round(samples[-1], 2),
            "p90_ms": round(samples[int(0.9 * len(samples))], 2), "rows": len(page)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", choices=["sqlite", "cassandra"], required=True)
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--reads", type=int, default=50)
    p.add_argument("--hosts", default="")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    node = None
    load0 = procstat.loadavg()
    tmp = tempfile.TemporaryDirectory(prefix="sb-history-")
    if args.store == "sqlite":
        from storage.history_sql import SqlHistoryStore

        store: HistoryStore = SqlHistoryStore(f"sqlite:///{tmp.name}/history.db")
    else:
        from cassandra.cluster import Cluster

        from storage.cassandra_schema import apply_schema
        from storage.cassandra_session import parse_hosts
        from storage.history_cassandra import DAY_MS, CassandraHistoryStore

        if not args.hosts:
            from tests.cassandra_server import start_cassandra

            node = start_cassandra()
            args.hosts = node.hosts
        keyspace = f"bench_{uuid.uuid4().hex[:12]}"
        names, port = parse_hosts(args.hosts, 9042)
        admin = Cluster(names, port=port, protocol_version=5)
        apply_schema(admin.connect(), keyspace,
                     "{'class': 'SimpleStrategy', 'replication_factor': 1}", 10 * DAY_MS)
        store = CassandraHistoryStore(args.hosts, keyspace=keyspace, bucket_ms=10 * DAY_MS)
    try:
        ids, took = fill(store, args.messages, args.batch)
        deep_anchor = ids[9]
        latest = timed(lambda: store.page(CONVERSATION, limit=100), args.reads)
        deep = timed(lambda: store.page(CONVERSATION, before=ids[109], limit=100), args.reads)
        oldest = timed(lambda: store.page(CONVERSATION, before=deep_anchor, limit=100),
                       args.reads)
        record = {"type": "history", "store": args.store, "messages": args.messages,
                  "write_s": round(took, 1), "write_per_s": round(args.messages / took),
                  "latest_page": latest, "deep_before_page": deep,
                  "oldest_partial_page": oldest, "loadavg_start": load0,
                  "loadavg_end": procstat.loadavg(), "ts": round(time.time())}
    finally:
        store.close()
        if node is not None:
            node.stop()
        tmp.cleanup()
    line = json.dumps(record)
    print(line)
    if args.out:
        with args.out.open("a") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
