"""Reproduce every benchmark table with one command.

    .venv/bin/python -m bench.run_all                 # the full matrix (hours on 2 cores)
    .venv/bin/python -m bench.run_all --profile quick # what docs/benchmarks.md reports
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

ALL_TRANSPORTS = ("ws", "sse", "longpoll", "poll")

# scenario -> loadgen arguments (the numbers)
SCENARIOS = {
    "idle-1k": ["--scenario", "idle", "--users", "1000"],
    "idle-5k": ["--scenario", "idle", "--users", "5000"],
    "idle-10k": ["--scenario", "idle", "--users", "10000", "--drain", "30"],
    "direct-500": ["--scenario", "direct", "--users", "2000", "--rate", "500",
                   "--duration", "20"],
    "direct-2000": ["--scenario", "direct", "--users", "2000", "--rate", "2000",
                    "--duration", "20"],
    "group": ["--scenario", "group", "--groups", "10", "--members", "100", "--rate", "20",
              "--duration", "20"],
    "max": ["--scenario", "max", "--users", "1000", "--senders", "64", "--duration", "20",
            "--drain", "30"],
    "storm": ["--scenario", "storm", "--users", "5000", "--drain", "60"],
}

SB_SCENARIOS = tuple(SCENARIOS)
PEER_SCENARIOS = ("idle-1k", "idle-5k", "idle-10k", "direct-500", "direct-2000", "group", "max")

# config -> (target, transports, scenarios)
FULL = {
    "sb-memory-1w": ("switchboard", ALL_TRANSPORTS, SB_SCENARIOS),
    "sb-redis-1w": ("switchboard", ALL_TRANSPORTS, SB_SCENARIOS),
    "sb-redis-2w": ("switchboard", ALL_TRANSPORTS, SB_SCENARIOS),
    "floor-1w": ("floor", ALL_TRANSPORTS, PEER_SCENARIOS),
    "socketio-1w": ("socketio", ("ws", "longpoll"), PEER_SCENARIOS),
    "nchan-memory": ("nchan", ("ws", "sse", "longpoll"), PEER_SCENARIOS),
    "nchan-redis": ("nchan", ("ws", "sse", "longpoll"), PEER_SCENARIOS),
}

# What fits in under an hour on two shared cores: the transports and scenarios the
# targets name; --repeat runs of direct-500 and max (the compared figures), one run of
# the others (QUICK_ONCE), and 10 s windows instead of 20.
QUICK_T = ("ws", "sse", "longpoll")
QUICK = {
    "sb-memory-1w": ("switchboard", QUICK_T, ("direct-500", "max", "idle-10k", "group",
                                              "direct-2000", "storm")),
    "sb-redis-2w": ("switchboard", QUICK_T, ("direct-500", "max", "group")),
    "nchan-redis": ("nchan", QUICK_T, ("direct-500", "max", "idle-10k", "group")),
    "floor-1w": ("floor", QUICK_T, ("direct-500", "max", "idle-10k")),
    "socketio-1w": ("socketio", ("ws", "longpoll"), ("direct-500", "max", "idle-10k")),
}
QUICK_ONCE = ("idle-1k", "idle-5k", "idle-10k", "group", "direct-2000", "storm")
PROFILES = {"full": FULL, "quick": QUICK}


def services(run_dir: Path) -> dict[str, str]:
    svc = run_dir / "svc"
    cmd = ["bash", "scripts/services.sh", "--run-dir", str(svc), "start", "redis", "postgres"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=600)
    env = {}
    for line in (svc / "env.sh").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    env["REDIS_PID"] = (svc / "redis" / "redis.pid").read_text().strip()
    return env


def make_server(config: str, run_dir: Path, env: dict[str, str]) -> Server:
    redis_url = env["SWITCHBOARD_TEST_REDIS_URL"]
    redis_pid = int(env["REDIS_PID"])
    if config == "sb-memory-1w":
        return SwitchboardServer(config, run_dir, 1)
    if config.startswith("sb-redis-"):
        return SwitchboardServer(config, run_dir, int(config[-2]), redis_url,
                                 env["SWITCHBOARD_TEST_DATABASE_URL"], redis_pid)
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
    p.add_argument("--profile", choices=sorted(PROFILES), default="full")
    p.add_argument("--only", action="append", help="config name(s) to run")
    p.add_argument("--scenario", action="append", help="scenario name(s) to run")
    p.add_argument("--transport", action="append", help="transport(s) to run")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/switchboard-bench"))
    p.add_argument("--out", type=Path,
                   default=ROOT / "bench/results" / f"{time.strftime('%Y%m%d-%H%M')}.jsonl")
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    env = services(args.run_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:
        fh.write(json.dumps({"type": "machine", "ts": round(time.time()),
                             **procstat.machine(), "versions": procstat.versions(PY),
                             "loadavg": procstat.loadavg(),
                             "fd_limit": hard, "argv": sys.argv}) + "\n")
    plan = PROFILES[args.profile]
    for config, (target, transports, scenarios) in plan.items():
        if args.only and config not in args.only:
            continue
        server = make_server(config, args.run_dir, env).start()
        for command in server.commands:
            print("$", command, flush=True)
        try:
            for scenario in scenarios:
                if args.scenario and scenario not in args.scenario:
                    continue
                once = QUICK_ONCE if args.profile == "quick" else ("idle-10k", "storm")
                repeats = 1 if scenario in once else args.repeat
                for transport in transports:
                    if args.transport and transport not in args.transport:
                        continue
                    for _ in range(repeats):
                        run_one(server, config, target, scenario, transport, args.out,
                                args.profile == "quick")
        finally:
            server.stop()
    print(f"results in {args.out}; tables: {PY} -m bench.report {args.out}", flush=True)
    return 0


def run_one(server: Server, config: str, target: str, scenario: str, transport: str,
            out: Path, quick: bool) -> None:
    cmd = [PY, "-m", "bench.loadgen", "--target", target, "--port", str(server.port),
           "--transport", transport, *SCENARIOS[scenario], "--label", config,
           "--out", str(out), "--server-pid", str(server.proc.pid), "--timeout", "420"]
    if quick and "--duration" in cmd:
        cmd[cmd.index("--duration") + 1] = "10"
    for name, pid in server.aux_pids.items():
        cmd += ["--aux-pid", f"{name}={pid}"]
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
    keys = ("connected", "kib_per_conn", "live", "send_rate", "accepted_per_s",
            "delivered_per_s", "deliveries_per_s", "caught_up_s", "p50_ms", "p99_ms",
            "lost", "duplicates", "server_cpu_pct", "client_cpu_pct")
    print(f"  {config} {scenario} {transport}: " + " ".join(
        f"{k}={rec[k]}" for k in keys if rec.get(k) is not None), flush=True)


if __name__ == "__main__":
    sys.exit(main())
