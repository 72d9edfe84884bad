"""Load generator: many users on one transport against Switchboard or a peer.

    python -m bench.loadgen --target switchboard --port 8080 --transport ws \\
        --scenario direct --users 2000 --rate 500 --duration 20 --server-pid 1234

Scenarios: ``idle`` (connect everyone, server RSS per connection, server CPU over
--duration quiet seconds, then a probe message to each user), ``direct`` (1:1 pairs at
--rate msg/s), ``group`` (--groups of --members at --rate msg/s in total), ``max``
(--senders closed-loop senders, as fast as acks come back), ``storm`` (everyone drops,
one message each while offline, all reconnect at once with their cursor). Each message
text is ``<key> <monotonic ns>``; receivers de-duplicate by key, so lost and duplicated
deliveries are counted exactly.

One asyncio process, raw sockets; it reports its own CPU time so a client-bound result
is visible. Results go to --out as one JSON line per run. Bounded by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import procstat
from bench.targets import TARGETS, Connection, Conv, Target, User
from bench.wire import HttpError

# What a connect or a send may meet on a live server, an overloaded one included (its
# 503 is an HttpError): counted as an error of the run, never a crash of it.
RUN_ERRORS = (TimeoutError, OSError, RuntimeError, ValueError, HttpError)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


class Ledger:
    """Who should get which message, who did, and how late."""

    def __init__(self) -> None:
        self.sent: dict[str, tuple[int, int, int]] = {}  # key -> (ns, recipients, sender)
        self.got: dict[str, set[int]] = {}
        self.latencies: list[float] = []
        self.delivered = 0
        self.duplicates = 0
        self.acked = 0
        self.errors = 0
        self.shed = 0
        self.last_error = ""
        self.recording = True

    def on_text(self, user: User, text: str) -> None:
        key, _, ns = text.partition(" ")
        entry = self.sent.get(key)
        if entry is None or entry[2] == user.uid:
            return  # not ours, or the sender's own copy
        got = self.got.setdefault(key, set())
        if user.uid in got:
            self.duplicates += 1
            return
        got.add(user.uid)
        self.delivered += 1
        if self.recording:
            self.latencies.append((time.monotonic_ns() - int(ns)) / 1e6)

    def expected(self) -> int:
        return sum(r for _, r, _ in self.sent.values())

    def lost(self) -> int:
        return self.expected() - sum(len(self.got.get(k, ())) for k in self.sent)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.target: Target = TARGETS[args.target](args.port, args.pool,
                                                    args.poll_interval)
        self.ledger = Ledger()
        self.conns: dict[int, Connection] = {}
        self.seq = 0
        self.tag = f"{os.getpid() % 10000}x{random.randrange(10**6)}"
        self.server_pids = [p for pid in args.server_pid for p in procstat.tree(pid)]
        self.result: dict = {}

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def worker_pids(self) -> list[int]:
        """Gunicorn/nginx workers (children of the given masters), else the pids."""
        kids = [c for pid in self.args.server_pid for c in procstat.children(pid)]
        return kids or list(self.args.server_pid)

    def aux_pids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for spec in self.args.aux_pid:
            name, _, pid = spec.partition("=")
            out.setdefault(name, []).append(int(pid))
        return out

    @staticmethod
    def aux_cpu(roots: list[int]) -> float:
        return sum(procstat.tree_cpu_seconds(pid) for pid in roots)

    async def connect_all(self, users: list[User]) -> tuple[int, float]:
        sem = asyncio.Semaphore(self.args.connect_concurrency)
        failures = 0
        started = time.monotonic()

        async def one(user: User) -> None:
            nonlocal failures
            async with sem:
                for attempt in range(3):
                    try:
                        prev = self.conns.get(user.uid)
                        self.conns[user.uid] = await asyncio.wait_for(self.target.connect(
                            user, self.args.transport, self.ledger.on_text, resume=prev), 30)
                        return
                    except RUN_ERRORS as err:
                        self.ledger.last_error = repr(err)[:200]
                        await asyncio.sleep(0.2 * (attempt + 1))
                failures += 1

        tasks = [asyncio.ensure_future(one(u)) for u in users]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1)
            done = sum(t.done() for t in tasks)
            self.log(f"connected {done - failures}/{len(users)} failures {failures}")
        return failures, time.monotonic() - started

    async def send_one(self, sender: User, conv: Conv) -> None:
        self.seq += 1
        key = f"b{self.tag}-{self.seq}"
        recipients = len(conv.members) - 1
        now = time.monotonic_ns()
        conn = self.conns.get(sender.uid)
        if conn is None:
            # A user whose every connection attempt failed (an overloaded server) has
            # nothing to send on: an error of this run, not a crash of the generator.
            self.ledger.errors += 1
            self.ledger.last_error = f"user {sender.uid} never connected"
            return
        self.ledger.sent[key] = (now, recipients, sender.uid)
        try:
            await asyncio.wait_for(self.target.send(conn, conv, key, f"{key} {now}"), 30)
            self.ledger.acked += 1
        except RUN_ERRORS as err:
            self.ledger.errors += 1
            self.ledger.last_error = repr(err)[:200]
            del self.ledger.sent[key]

    async def open_loop(self, convs: list[Conv], rate: float, duration: float) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        inflight: set[asyncio.Task] = set()
        last_log = start
        while (now := loop.time()) < start + duration:
            due = int((now - start) * rate)
            while n < due:
                n += 1
                if len(inflight) >= self.args.max_inflight:
                    self.ledger.shed += 1
                    continue
                conv = random.choice(convs)
                task = loop.create_task(self.send_one(random.choice(conv.members), conv))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            if now - last_log >= 2:
                last_log = now
                self.progress()
            await asyncio.sleep(0.002)
        if inflight:
            await asyncio.wait(inflight, timeout=30)
        return loop.time() - start

    async def closed_loop(self, convs: list[Conv], senders: int, duration: float) -> float:
        loop = asyncio.get_running_loop()
        stop = loop.time() + duration

        async def sender() -> None:
            while loop.time() < stop:
                conv = random.choice(convs)
                await self.send_one(random.choice(conv.members), conv)

        start = loop.time()
        tasks = [loop.create_task(sender()) for _ in range(senders)]
        while loop.time() < stop:
            await asyncio.sleep(2)
            self.progress()
        await asyncio.wait(tasks, timeout=35)
        return loop.time() - start

    def progress(self) -> None:
        led = self.ledger
        self.log(f"acked {led.acked} errors {led.errors} shed {led.shed} delivered "
                 f"{led.delivered}/{led.expected()} dup {led.duplicates}")

    async def drain(self, timeout: float) -> float:
        """Wait until every acked message reached everyone, or timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout and self.ledger.lost() > 0:
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    def latency_summary(self) -> dict:
        lat = self.ledger.latencies
        return {"p50_ms": percentile(lat, 0.50), "p95_ms": percentile(lat, 0.95),
                "p99_ms": percentile(lat, 0.99),
                "max_ms": round(max(lat), 2) if lat else None, "samples": len(lat)}

    async def setup_pairs(self, count: int) -> tuple[list[User], list[Conv]]:
        users = await self.target.make_users(
            count, progress=lambda n: self.log(f"signed up {n}/{count}"))
        convs: list[Conv] = []
        sem = asyncio.Semaphore(32)

        async def pair(a: User, b: User) -> None:
            async with sem:
                convs.append(await self.target.direct(a, b))
        await asyncio.gather(*(pair(users[i], users[i + 1])
                               for i in range(0, len(users) - 1, 2)))
        self.log(f"{len(users)} users, {len(convs)} direct conversations")
        return users, convs

    async def setup_groups(self, groups: int, members: int) -> tuple[list[User], list[Conv]]:
        users = await self.target.make_users(
            groups * members, progress=lambda n: self.log(f"signed up {n}")
        )
        convs = [await self.target.group(g, users[g * members:(g + 1) * members])
                 for g in range(groups)]
        return users, convs

    async def measured(self, body, users: list[User]) -> dict:
        """Run body() between CPU/RSS readings of the server, its helpers and ourselves."""
        aux = self.aux_pids()
        cpu0 = procstat.cpu_seconds(self.server_pids)
        aux0 = {k: self.aux_cpu(v) for k, v in aux.items()}
        me0 = os.times()
        wall0 = time.monotonic()
        out = await body()
        wall = time.monotonic() - wall0
        me1 = os.times()
        out["server_cpu_s"] = round(procstat.cpu_seconds(self.server_pids) - cpu0, 2)
        out["server_cpu_pct"] = round(100 * out["server_cpu_s"] / wall, 1)
        for k, v in aux.items():
            out[f"{k}_cpu_pct"] = round(100 * (self.aux_cpu(v) - aux0[k]) / wall, 1)
        client = (me1.user - me0.user) + (me1.system - me0.system)
        out["client_cpu_pct"] = round(100 * client / wall, 1)
        out["window_s"] = round(wall, 2)
        return out

    async def scenario(self) -> dict:
        a = self.args
        if a.scenario == "group":
            users, convs = await self.setup_groups(a.groups, a.members)
        else:
            users, convs = await self.setup_pairs(a.users)
        await asyncio.sleep(1)
        rss0 = procstat.rss_kib(self.worker_pids())
        failures, took = await self.connect_all(users)
        await asyncio.sleep(2)
        rss1 = procstat.rss_kib(self.worker_pids())
        held = len(self.conns) - failures
        res: dict = {"users": len(users), "connected": held, "connect_failures": failures,
                     "connect_s": round(took, 1), "rss_before_kib": rss0,
                     "rss_after_kib": rss1,
                     "kib_per_conn": round((rss1 - rss0) / max(1, held), 1)}
        if a.scenario == "idle":
            # Parked connections should cost (next to) nothing: the server's CPU while
            # everyone is connected and nothing is sent, for --duration seconds.
            async def quiet() -> dict:
                await asyncio.sleep(a.duration)
                return {}
            # The window opens once the connections' own start-up work (subscriptions,
            # first renewals, the last handshakes' replies) has had --quiet-after s.
            await asyncio.sleep(a.quiet_after)
            held_cpu = await self.measured(quiet, users)
            res.update({f"quiet_{k}": v for k, v in held_cpu.items() if k.endswith("cpu_pct")})

            async def probe() -> dict:
                # One message to each user: each pair member sends to the other.
                targets = [(c.members[1 - i], c) for c in convs for i in (0, 1)]
                sem = asyncio.Semaphore(64)

                async def one(sender: User, conv: Conv) -> None:
                    async with sem:
                        await self.send_one(sender, conv)
                await asyncio.gather(*(one(s, c) for s, c in targets))
                await self.drain(a.drain)
                live = len({uid for got in self.ledger.got.values() for uid in got})
                return {"live": live}
            res.update(await self.measured(probe, users))
        elif a.scenario in ("direct", "group"):
            async def body() -> dict:
                wall = await self.open_loop(convs, a.rate, a.duration)
                self.ledger.recording = True
                drained = await self.drain(a.drain)
                return {"send_rate": round(self.ledger.acked / wall, 1),
                        "deliveries_per_s": round(self.ledger.delivered / wall, 1),
                        "drain_s": round(drained, 2)}
            res.update(await self.measured(body, users))
            res["target_rate"] = a.rate
        elif a.scenario == "max":
            async def body() -> dict:
                wall = await self.closed_loop(convs, a.senders, a.duration)
                delivered_in_window = self.ledger.delivered
                drained = await self.drain(a.drain)
                return {"accepted_per_s": round(self.ledger.acked / wall, 1),
                        "delivered_per_s": round(delivered_in_window / wall, 1),
                        "drain_s": round(drained, 2)}
            res.update(await self.measured(body, users))
        elif a.scenario == "storm":
            async def body() -> dict:
                for conn in self.conns.values():
                    conn.close()
                await asyncio.sleep(0.5)
                # While everyone is away: one message to each user.
                sem = asyncio.Semaphore(64)

                async def one(sender: User, conv: Conv) -> None:
                    async with sem:
                        await self.send_while_offline(sender, conv)
                await asyncio.gather(*(one(c.members[1 - i], c) for c in convs
                                       for i in (0, 1)))
                self.ledger.recording = False
                start = time.monotonic()
                fails, _ = await self.connect_all(users)
                drained = await self.drain(a.drain)
                return {"reconnect_failures": fails,
                        "caught_up_s": round(time.monotonic() - start, 2),
                        "drain_s": round(drained, 2)}
            res.update(await self.measured(body, users))
        res.update({"acked": self.ledger.acked, "send_errors": self.ledger.errors,
                    "poll_retries": self.target.retried,
                    "shed": self.ledger.shed, "expected": self.ledger.expected(),
                    "delivered": self.ledger.delivered, "lost": self.ledger.lost(),
                    "duplicates": self.ledger.duplicates, "last_error": self.ledger.last_error,
                    **self.latency_summary()})
        for conn in self.conns.values():
            conn.close()
        await self.target.close()
        return res

    async def send_while_offline(self, sender: User, conv: Conv) -> None:
        """Storm: the sender's socket is closed, so send over plain HTTP."""
        conn = self.conns.get(sender.uid)
        if conn is None:
            await self.send_one(sender, conv)  # counted as never connected
            return
        saved, conn.ws = conn.ws, None
        try:
            await self.send_one(sender, conv)
        finally:
            conn.ws = saved


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=sorted(TARGETS), default="switchboard")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--transport", default="ws", choices=["ws", "sse", "longpoll", "poll"])
    p.add_argument("--scenario", default="direct",
                   choices=["idle", "direct", "group", "max", "storm"])
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--groups", type=int, default=10)
    p.add_argument("--members", type=int, default=100)
    p.add_argument("--rate", type=float, default=500.0, help="messages/s (open loop)")
    p.add_argument("--senders", type=int, default=64, help="closed-loop senders (max)")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--quiet-after", type=float, default=0.0,
                   help="idle: seconds between the last connection (+2 s) and the quiet "
                        "window")
    p.add_argument("--drain", type=float, default=15.0, help="wait for stragglers, s")
    p.add_argument("--max-inflight", type=int, default=2000)
    p.add_argument("--pool", type=int, default=64, help="keep-alive REST connections")
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--connect-concurrency", type=int, default=200)
    p.add_argument("--server-pid", type=int, action="append", default=[],
                   help="gunicorn/nginx master (its workers are measured)")
    p.add_argument("--aux-pid", action="append", default=[],
                   help="NAME=PID of a helper to report CPU for, with its children "
                        "(redis, rq, db)")
    p.add_argument("--label", default="")
    p.add_argument("--out", type=Path)
    p.add_argument("--timeout", type=float, default=600.0, help="hard bound, s")
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                   help="event loop; auto: uvloop where installed (bench/requirements.txt)")
    return p.parse_args(argv)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def amain(args: argparse.Namespace) -> dict:
    run = Run(args)
    load0 = procstat.loadavg()
    started = time.time()
    res = await asyncio.wait_for(run.scenario(), args.timeout)
    record = {"ts": round(started), "label": args.label, "target": args.target,
              "transport": args.transport, "scenario": args.scenario,
              "params": {k: getattr(args, k) for k in (
                  "users", "groups", "members", "rate", "senders", "duration", "quiet_after")},
              "loadavg_start": load0, "loadavg_end": procstat.loadavg(), **res}
    return record


def _loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The event loop the client runs on. It shares the machine's cores with the server
    it measures: uvloop's C loop leaves more of them to a server that needs them all."""
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    loop_name, factory = _loop_factory(args.loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        record = {**runner.run(amain(args)), "loop": loop_name}
    line = json.dumps(record)
    print(line, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
