"""Sustained persistence through the real pipeline: Redis persist stream -> RQ workers
-> Cassandra (or SQL), in messages per second.

    .venv/bin/python -m bench.persist_drain --redis redis://127.0.0.1:PORT/0 \\
        --cassandra 127.0.0.1:PORT [--messages 50000] [--workers 1] [--runs 3]

Each run fills the persist stream exactly as acknowledged sends do (PersistBuffer.record:
the conversation tail and the stream entry in one transaction; ``--conversations``
direct conversations, two members each, messages round-robin over them), then starts
``--workers`` real ``python -m workers`` processes and times them until the backlog is
empty. That includes everything a drain does per batch: the message rows, the senders'
read marks and both members' inbox rows. Prints one JSON line per run and the median.

The shape decides how much batching helps: with 200 conversations a 500-message drain
holds ~2.5 messages per conversation and per reader (one partition each, so one
request); with ``--conversations 10000`` every message is alone in its partitions and
costs four single-row writes - the worst case.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from storage.cassandra_schema import apply_schema
from storage.cassandra_session import parse_hosts
from storage.history import Message
from storage.ids import IdGenerator
from storage.persist_buffer import PersistBuffer
from storage.redis_conn import connect, delete_prefix

ROOT = Path(__file__).resolve().parent.parent
REPLICATION = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
DAY_MS = 24 * 3600 * 1000


def fill(buffer: PersistBuffer, count: int, conversations: int) -> float:
    ids = IdGenerator(12)
    seqs = [0] * conversations
    started = time.monotonic()
    for n in range(count):
        conv = n % conversations
        seqs[conv] += 1
        sender = 2 * conv + 1 + (n // conversations) % 2
        message = Message(ids.next_id(), conv + 1, seqs[conv], sender, uuid.uuid4().hex,
                          "x" * 100, int(time.time() * 1000))
        buffer.record(message, [2 * conv + 1, 2 * conv + 2])
    return time.monotonic() - started


def fresh_sql(url: str, name: str) -> str:
    """A history database of this run's own: the fill reuses conversation ids and seqs,
    which a database holding an earlier run's rows would refuse. PostgreSQL: a schema
    (dropped by ``drop_sql``); SQLite: a new file."""
    if url.startswith("sqlite"):
        return f"sqlite:////tmp/{name}.db"
    from sqlalchemy import create_engine, text

    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    admin.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"


def drop_sql(url: str, name: str) -> None:
    if url.startswith("sqlite"):
        Path(f"/tmp/{name}.db").unlink(missing_ok=True)
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
    admin.dispose()


def one_run(args: argparse.Namespace) -> dict:
    prefix = f"bpd{secrets.token_hex(4)}"
    env = {**os.environ, "SWITCHBOARD_REDIS_URL": args.redis,
           "SWITCHBOARD_REDIS_PREFIX": prefix, "SWITCHBOARD_PERSIST_BATCH": str(args.batch),
           "SWITCHBOARD_DATA_DIR": f"/tmp/{prefix}"}
    if args.cassandra:
        keyspace = f"bench_{uuid.uuid4().hex[:12]}"
        from cassandra.cluster import Cluster

        names, port = parse_hosts(args.cassandra, 9042)
        cluster = Cluster(names, port=port, protocol_version=5)
        apply_schema(cluster.connect(), keyspace, REPLICATION, 10 * DAY_MS)
        cluster.shutdown()
        env.update(SWITCHBOARD_CASSANDRA_HOSTS=args.cassandra,
                   SWITCHBOARD_CASSANDRA_KEYSPACE=keyspace)
    else:
        env["SWITCHBOARD_HISTORY_URL"] = fresh_sql(args.sql, prefix)
    client = connect(args.redis, pool_size=4)
    buffer = PersistBuffer(client, prefix, int(env.get("SWITCHBOARD_PERSIST_SHARDS", "4")))
    workers: list[subprocess.Popen] = []
    try:
        fill_s = fill(buffer, args.messages, args.conversations)
        started = time.monotonic()
        for _ in range(args.workers):
            workers.append(subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        deadline = started + args.timeout
        while sum(buffer.backlog().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        left = sum(buffer.backlog().values())
        cpu = 0.0
        for proc in workers:
            with open(f"/proc/{proc.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return {"bench": "persist_drain", "store": "cassandra" if args.cassandra else "sql",
                "messages": args.messages, "workers": args.workers, "batch": args.batch,
                "fill_s": round(fill_s, 2), "drain_s": round(elapsed, 2), "left": left,
                "msgs_per_s": round((args.messages - left) / elapsed, 1),
                "worker_cpu_s": round(cpu, 2),
                "load_at_start": os.getloadavg()[0]}
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(30)
        delete_prefix(client, prefix + ":*")
        client.close()
        if args.sql:
            drop_sql(args.sql, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--cassandra", default="")
    parser.add_argument("--sql", default="")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if not args.cassandra and not args.sql:
        parser.error("give --cassandra HOSTS or --sql URL")
    rates = []
    for _ in range(args.runs):
        result = one_run(args)
        print(json.dumps(result), flush=True)
        rates.append(result["msgs_per_s"])
    print(f"median {statistics.median(rates):.0f} messages/s over {len(rates)} runs "
          f"[{min(rates):.0f}-{max(rates):.0f}]")


if __name__ == "__main__":
    main()
