"""Reproduce every benchmark table with one command.

    .venv/bin/python -m bench.run_all                 # the full matrix (hours on 2 cores)
    .venv/bin/python -m bench.run_all --profile quick # what docs/benchmarks.md reports
    .venv/bin/python -m bench.run_all --profile matrix # every cell once, short windows
    .venv/bin/python -m bench.run_all --only sb-memory-1w --scenario direct

Starts Redis and PostgreSQL (scripts/services.sh), each server under test in turn on a
free loopback port, runs the load generator against it for every planned scenario and
transport ``--repeat`` times, and appends one JSON line per run to --out (the first
line of a session records the machine, versions and load). Prints every command line.
Then bench/report.py turns the JSON lines into the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import procstat
from bench.servers import (
    PY,
    ROOT,
    FloorServer,
    NchanServer,
    Server,
    SocketIOServer,
    SwitchboardServer,
)
from storage.redis_conn import connect

ALL_TRANSPORTS = ("ws", "sse", "longpoll", "poll")

# scenario -> loadgen arguments (the numbers)
SCENARIOS = {
    "idle-1k": ["--scenario", "idle", "--users", "1000"],
    "idle-5k": ["--scenario", "idle", "--users", "5000"],
    "idle-10k": ["--scenario", "idle", "--users", "10000", "--drain", "30",
                 "--quiet-after", "10"],
    "direct-500": ["--scenario", "direct", "--users", "2000", "--rate", "500",
                   "--duration", "20"],
    "direct-2000": ["--scenario", "direct", "--users", "2000", "--rate", "2000",
                    "--duration", "20"],
    "group": ["--scenario", "group", "--groups", "10", "--members", "100", "--rate", "20",
              "--duration", "20"],
    "max": ["--scenario", "max", "--users", "1000", "--senders", "64", "--duration", "20",
            "--drain", "30"],
    # The same with four times the senders: whether a peer's `max` is bound by the
    # closed loop (64 senders each awaiting its acknowledgement) rather than by CPU.
    "max-256": ["--scenario", "max", "--users", "1000", "--senders", "256", "--duration",
                "20", "--drain", "30"],
    "storm": ["--scenario", "storm", "--users", "5000", "--drain", "60"],
}

SB_SCENARIOS = tuple(SCENARIOS)
PEER_SCENARIOS = ("idle-1k", "idle-5k", "idle-10k", "direct-500", "direct-2000", "group", "max",
                  "max-256")

# config -> (target, transports, scenarios)
FULL = {
    "sb-memory-1w": ("switchboard", ALL_TRANSPORTS, SB_SCENARIOS),
    "sb-redis-1w": ("switchboard", ALL_TRANSPORTS, SB_SCENARIOS),
    "sb-redis-2w": ("switchboard", ALL_TRANSPORTS, SB_SCENARIOS),
    # The scale-out shape: three Cluster primaries on this same machine (so more Redis
    # processes share the two cores, not more capacity): what the cluster paths cost.
    "sb-cluster-2w": ("switchboard", ALL_TRANSPORTS, SB_SCENARIOS),
    "floor-1w": ("floor", ALL_TRANSPORTS, PEER_SCENARIOS),
    "socketio-1w": ("socketio", ("ws", "longpoll"), PEER_SCENARIOS),
    "nchan-memory": ("nchan", ("ws", "sse", "longpoll"), PEER_SCENARIOS),
    "nchan-redis": ("nchan", ("ws", "sse", "longpoll"), PEER_SCENARIOS),
}

# What fits in about 40 minutes on two shared cores, in phases so that every config
# has the compared figures before the next phase starts: (config, scenario, transports,
# runs). direct/max windows are 10 s instead of 20.
QUICK_PHASES = [
    [(c, s, ("ws",), 3) for c in ("sb-memory-1w", "sb-redis-2w", "nchan-redis", "floor-1w",
                                   "socketio-1w") for s in ("direct-500", "max")],
    [(c, s, ("sse",), 3) for c in ("sb-memory-1w", "sb-redis-2w", "nchan-redis",
                                    "floor-1w") for s in ("direct-500", "max")],
    [("sb-memory-1w", "direct-500", ("longpoll",), 3), ("sb-memory-1w", "group", ("ws",), 1),
     ("sb-memory-1w", "storm", ("ws",), 1),
     ("sb-memory-1w", "idle-10k", ("ws", "sse", "longpoll"), 1),
     ("nchan-redis", "idle-10k", ("ws", "sse", "longpoll"), 1),
     ("nchan-redis", "group", ("ws", "longpoll"), 1),
     ("floor-1w", "idle-10k", ("ws", "sse", "longpoll"), 1),
     ("socketio-1w", "idle-10k", ("ws", "longpoll"), 1),
     ("sb-redis-2w", "direct-500", ("longpoll",), 3), ("sb-redis-2w", "group", ("ws",), 1),
     ("socketio-1w", "direct-500", ("longpoll",), 3)],
]


def full_plan(repeat: int) -> list[tuple[str, str, tuple[str, ...], int]]:
    return [(config, scenario, transports, 1 if scenario in ("idle-10k", "storm") else repeat)
            for config, (_, transports, scenarios) in FULL.items() for scenario in scenarios]


# The matrix once, in short windows: every scenario on every transport of the
# three Switchboard engines (memory with one worker, Redis with one and with two), then
# the peers' scenarios 1-4 on each of their transports. max-256 (a probe of the closed
# loop) and the Cluster (its code paths are priced by the follow-ups) are left out.
# About two hours here (2026-12-07: 80 min for the three engines, 96 runs).
MATRIX_CONFIGS = ("sb-memory-1w", "sb-redis-1w", "sb-redis-2w", "floor-1w", "socketio-1w",
                  "nchan-memory", "nchan-redis")


def matrix_plan() -> list[tuple[str, str, tuple[str, ...], int]]:
    return [(config, scenario, (transport,), 1) for config in MATRIX_CONFIGS
            for transport in FULL[config][1] for scenario in FULL[config][2]
            if scenario != "max-256"]


TARGET_OF = {config: target for config, (target, _, _) in FULL.items()}
PROFILES = ("full", "quick", "matrix")


def services(run_dir: Path, cluster: bool = False) -> dict[str, str]:
    """Redis and PostgreSQL, and a 3-primary Redis Cluster when ``cluster``."""
    svc = run_dir / "svc"
    cmd = ["bash", "scripts/services.sh", "--run-dir", str(svc), "start", "redis", "postgres",
           *(["redis-cluster"] if cluster else [])]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=600)
    env = {}
    for line in (svc / "env.sh").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    env["REDIS_PID"] = (svc / "redis" / "redis.pid").read_text().strip()
    env["POSTGRES_PID"] = (svc / "postgres" / "pid").read_text().strip()
    env["REDIS_CLUSTER_PIDS"] = ",".join(
        pid.read_text().strip() for pid in sorted(svc.glob("redis-cluster/node-*/redis.pid")))
    return env


def empty_stores(env: dict[str, str]) -> None:
    """Empty the Redis (and Cluster) this runner started, before a run's fresh server.

    Otherwise what earlier runs left piles up over a profile (Switchboard's event logs
    live 24 h, nchan keeps each channel's messages for 5 minutes: 400,000 keys an hour
    into the quick profile of 2026-12-07), and each run pays for its predecessors in
    Redis' memory and AOF rewrites, more the later its place in the plan.
    """
    for name in ("SWITCHBOARD_TEST_REDIS_URL", "SWITCHBOARD_TEST_REDIS_CLUSTER_URL"):
        if env.get(name):
            client = connect(env[name], pool_size=2)
            try:
                client.flushdb()  # on a Cluster, redis-py sends it to every primary
            finally:
                client.close()


def stop_services(run_dir: Path) -> None:
    cmd = ["bash", "scripts/services.sh", "--run-dir", str(run_dir / "svc"), "stop"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=False, timeout=120)


def make_server(config: str, run_dir: Path, env: dict[str, str]) -> Server:
    redis_url = env["SWITCHBOARD_TEST_REDIS_URL"]
    redis_pid = int(env["REDIS_PID"])
    if config == "sb-memory-1w":
        return SwitchboardServer(config, run_dir, 1)
    if config.startswith("sb-redis-"):
        return SwitchboardServer(config, run_dir, int(config[-2]), redis_url,
                                 env["SWITCHBOARD_TEST_DATABASE_URL"], [redis_pid],
                                 db_pid=int(env["POSTGRES_PID"]))
    if config.startswith("sb-cluster-"):
        # Delivery on the Cluster; RQ's queues on the standalone Redis (RQ needs one
        # server), whose CPU is then not in the "redis" figure.
        return SwitchboardServer(config, run_dir, int(config[-2]),
                                 env["SWITCHBOARD_TEST_REDIS_CLUSTER_URL"],
                                 env["SWITCHBOARD_TEST_DATABASE_URL"],
                                 [int(pid) for pid in env["REDIS_CLUSTER_PIDS"].split(",")],
                                 rq_redis_url=redis_url, db_pid=int(env["POSTGRES_PID"]))
    if config == "floor-1w":
        return FloorServer(config, run_dir, redis_url, redis_pid)
    if config == "socketio-1w":
        return SocketIOServer(config, run_dir)
    if config == "nchan-memory":
        return NchanServer(config, run_dir)
    if config == "nchan-redis":
        return NchanServer(config, run_dir, redis_url, redis_pid)
    raise SystemExit(f"unknown config {config}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=PROFILES, default="full")
    p.add_argument("--only", action="append", help="config name(s) to run")
    p.add_argument("--scenario", action="append", help="scenario name(s) to run")
    p.add_argument("--transport", action="append", help="transport(s) to run")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/switchboard-bench"))
    p.add_argument("--out", type=Path,
                   default=ROOT / "bench/results" / f"{time.strftime('%Y%m%d-%H%M')}.jsonl")
    p.add_argument("--settle-load", type=float, default=1.0,
                   help="start each run once the 1-minute load average is below this "
                        "(waiting at most 2 min); 0: start at once")
    p.add_argument("--reuse-server", action="store_true",
                   help="keep one server per config across its runs (faster; but a run "
                        "then starts on the memory, connections and CPU state the "
                        "previous run left)")
    p.add_argument("--loadgen-loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                   help="the load generator's event loop (bench/loadgen.py --loop)")
    args = p.parse_args()

    # Stopping the runner (kill PID) still stops the server it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    server: Server | None = None
    try:
        plan = {"full": lambda: full_plan(args.repeat), "matrix": matrix_plan,
                "quick": lambda: [entry for phase in QUICK_PHASES for entry in phase]
                }[args.profile]()
        plan = [e for e in plan if (not args.only or e[0] in args.only) and (
            not args.scenario or e[1] in args.scenario)]
        env = services(args.run_dir, cluster=any(e[0].startswith("sb-cluster-") for e in plan))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as fh:
            fh.write(json.dumps({"type": "machine", "ts": round(time.time()),
                                 **procstat.machine(), "versions": procstat.versions(PY),
                                 "loadavg": procstat.loadavg(),
                                 "fd_limit": hard, "argv": sys.argv}) + "\n")
        for config, scenario, transports, runs in plan:
            for transport in transports:
                if args.transport and transport not in args.transport:
                    continue
                for _ in range(runs):
                    if server is None or server.name != config or not args.reuse_server:
                        if server is not None:
                            server.stop()
                        empty_stores(env)
                        server = make_server(config, args.run_dir, env).start()
                        for command in server.commands:
                            print("$", command, flush=True)
                    run_one(server, config, TARGET_OF[config], scenario, transport, args.out,
                            args.profile != "full", args.settle_load, args.loadgen_loop)
    finally:
        if server is not None:
            server.stop()
        stop_services(args.run_dir)
    print(f"results in {args.out}; tables: {PY} -m bench.report {args.out}", flush=True)
    return 0


def settle(below: float, limit: float = 120.0) -> None:
    """Wait (up to ``limit`` s) until the 1-minute load average is under ``below``: back
    to back, a run started while the previous run's server was still draining its
    backlog, and its tail measured that (load averages of 2-4 at start)."""
    if below <= 0:
        return
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        time.sleep(2)


def run_one(server: Server, config: str, target: str, scenario: str, transport: str,
            out: Path, short: bool, settle_load: float = 0.0, loop: str = "auto") -> None:
    cmd = [PY, "-m", "bench.loadgen", "--target", target, "--port", str(server.port),
           "--transport", transport, *SCENARIOS[scenario], "--label", config,
           "--out", str(out), "--server-pid", str(server.proc.pid), "--timeout", "420",
           "--loop", loop]
    if short and "--duration" in cmd:
        cmd[cmd.index("--duration") + 1] = "10"
    for name, pids in server.aux_pids.items():
        cmd += [arg for pid in pids for arg in ("--aux-pid", f"{name}={pid}")]
    settle(settle_load)
    print("$", " ".join(os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c
                        for c in cmd), flush=True)
    try:
        res = subprocess.run(cmd, cwd=ROOT, timeout=480, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        print(f"  {config} {scenario} {transport}: timed out", flush=True)
        return
    if res.returncode:
        print(f"  {config} {scenario} {transport}: failed\n{res.stderr[-1500:]}", flush=True)
        return
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    keys = ("connected", "kib_per_conn", "quiet_server_cpu_pct", "live", "send_rate",
            "accepted_per_s", "delivered_per_s", "deliveries_per_s", "caught_up_s", "p50_ms",
            "p99_ms", "lost", "duplicates", "server_cpu_pct", "client_cpu_pct")
    print(f"  {config} {scenario} {transport}: " + " ".join(
        f"{k}={rec[k]}" for k in keys if rec.get(k) is not None), flush=True)


if __name__ == "__main__":
    sys.exit(main())
