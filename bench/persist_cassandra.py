"""Sustained history writes into Cassandra: messages per second through ``store()``.

    .venv/bin/python -m bench.persist_cassandra [--hosts 127.0.0.1:9142] [--seconds 20]
        [--batch 500] [--conversations 200] [--runs 3] [--text-bytes 100]

Each run writes batches like a persistence worker would drain them from the delivery
log: ``--batch`` messages spread over ``--conversations`` conversations (so one call
writes many partitions), for ``--seconds``, into a fresh keyspace with production-width
(10 day) buckets; then it reports messages/s. The median of ``--runs`` runs is printed
last. Without ``--hosts`` (or SWITCHBOARD_CASSANDRA_HOSTS) a throwaway node is started
with scripts/cassandra.sh and stopped afterwards. Client and server share this machine,
so the number is a floor for a real cluster, where the node has its own cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid

from cassandra.cluster import Cluster

from storage.cassandra_schema import apply_schema
from storage.cassandra_session import parse_hosts
from storage.history import Message
from storage.history_cassandra import DAY_MS, CassandraHistoryStore
from storage.ids import IdGenerator

REPLICATION = "{'class': 'SimpleStrategy', 'replication_factor': 1}"


def one_run(hosts: str, seconds: float, batch: int, conversations: int,
            text_bytes: int) -> float:
    """Messages per second over one run of ``seconds``, into a keyspace of its own."""
    keyspace = f"bench_{uuid.uuid4().hex[:12]}"
    names, port = parse_hosts(hosts, 9042)
    admin = Cluster(names, port=port, protocol_version=5)
    session = admin.connect()
    apply_schema(session, keyspace, REPLICATION, 10 * DAY_MS)
    store = CassandraHistoryStore(hosts, keyspace=keyspace, bucket_ms=10 * DAY_MS)
    ids = IdGenerator(11)
    seqs = [0] * conversations
    text = "x" * text_bytes
    try:
        store.store([])  # connect and prepare outside the measured window
        store.last_seq(0)
        written = 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            messages = []
            for i in range(batch):
                conv = (written + i) % conversations
                seqs[conv] += 1
                messages.append(Message(ids.next_id(), conv + 1, seqs[conv], 1 + i % 50,
                                        uuid.uuid4().hex, text, int(time.time() * 1000)))
            store.store(messages)
            written += batch
        elapsed = time.monotonic() - started
    finally:
        store.close()
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        admin.shutdown()
    return written / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", default=os.environ.get("SWITCHBOARD_CASSANDRA_HOSTS", ""))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--text-bytes", type=int, default=100)
    args = parser.parse_args(argv)

    node = None
    if not args.hosts:
        from tests.cassandra_server import start_cassandra

        node = start_cassandra()
        args.hosts = node.hosts
    try:
        rates = []
        for run in range(1, args.runs + 1):
            rate = one_run(args.hosts, args.seconds, args.batch, args.conversations,
                           args.text_bytes)
            rates.append(rate)
            print(f"run {run}: {rate:,.0f} messages/s", flush=True)
    finally:
        if node is not None:
            node.stop()
    print(f"median of {len(rates)}: {statistics.median(rates):,.0f} messages/s "
          f"(batch {args.batch}, {args.conversations} conversations, "
          f"{args.text_bytes}-byte texts, {args.seconds:.0f} s per run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
