"""Start and stop the servers under test: Switchboard (three engines) and the peers.

Every server listens on 127.0.0.1 on a free port and is ended by its PID only.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# Bench settings for Switchboard. PASSWORD_HASH_LOG2N=4 makes sign-up of 10,000 users
# take seconds instead of minutes (scrypt at the default 2**14 costs ~50 ms a user); rate
# limits are lifted because one load generator speaks for thousands of users.
SWITCHBOARD_BENCH_ENV = {
    "SWITCHBOARD_PASSWORD_HASH_LOG2N": "4",
    "SWITCHBOARD_SEND_RATE_PER_SECOND": "1000000",
    "SWITCHBOARD_SEND_RATE_BURST": "1000000",
    "SWITCHBOARD_MAX_CONNECTIONS_PER_USER": "20",
    "SWITCHBOARD_WORKER_CONNECTIONS": "12000",
    "SWITCHBOARD_LOG_LEVEL": "warning",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


class Server:
    """One server under test: a command, its env, its PID; ``aux`` are helpers (RQ)."""

    def __init__(self, name: str, run_dir: Path) -> None:
        self.name = name
        self.run_dir = run_dir / name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.aux: dict[str, subprocess.Popen] = {}
        self.aux_pids: dict[str, list[int]] = {}  # CPU reported per name, summed
        self.commands: list[str] = []

    def spawn(self, argv: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
        self.commands.append(" ".join(
            f"{k}={'<random>' if k.endswith('SECRET_KEY') else v}" for k, v in env.items()
            if k not in os.environ or os.environ[k] != v)
                             + " " + " ".join(argv))
        out = open(self.run_dir / log, "ab")  # noqa: SIM115 - lives with the process
        return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT)

    def start(self) -> Server:
        raise NotImplementedError

    def stop(self) -> None:
        for proc in [*self.aux.values(), self.proc]:
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGINT if proc is self.proc else signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def gunicorn(app: str, port: int, workers: int) -> list[str]:
    return [PY, "-m", "gunicorn", "-k", "gevent", "-w", str(workers), "--worker-connections",
            "12000", "--backlog", "4096", "--log-level", "warning", "-b", f"127.0.0.1:{port}",
            app]


class SwitchboardServer(Server):
    def __init__(self, name: str, run_dir: Path, workers: int, redis_url: str = "",
                 database_url: str = "", redis_pids: list[int] | None = None,
                 rq_redis_url: str = "", db_pid: int = 0) -> None:
        """``rq_redis_url``: a standalone Redis for RQ when ``redis_url`` is a Cluster's;
        ``db_pid``: PostgreSQL's postmaster, whose CPU (backends included) is reported."""
        super().__init__(name, run_dir)
        self.workers = workers
        self.redis_url = redis_url
        self.rq_redis_url = rq_redis_url or redis_url
        self.database_url = database_url
        if redis_pids:
            self.aux_pids["redis"] = list(redis_pids)
        if db_pid:
            self.aux_pids["db"] = [db_pid]

    def start(self) -> SwitchboardServer:
        env = {**SWITCHBOARD_BENCH_ENV, "SWITCHBOARD_DATA_DIR": str(self.run_dir / "data"),
               "SWITCHBOARD_WORKERS": str(self.workers),
               "SWITCHBOARD_SECRET_KEY": secrets.token_hex(32)}
        if self.redis_url:
            env.update({"SWITCHBOARD_REDIS_URL": self.redis_url,
                        "SWITCHBOARD_RQ_REDIS_URL": self.rq_redis_url,
                        "SWITCHBOARD_DATABASE_URL": self.database_url,
                        "SWITCHBOARD_REDIS_PREFIX": f"sbb{secrets.token_hex(4)}"})
        (self.run_dir / "data").mkdir(exist_ok=True)
        self.proc = self.spawn([PY, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                                "--backlog", "4096", "--bind", f"127.0.0.1:{self.port}",
                                "wsgi:app"], env, "gunicorn.log")
        if self.redis_url:
            # One RQ worker drains the persist stream into SQL history (PostgreSQL).
            self.aux["rq"] = self.spawn([PY, "-m", "workers"], env, "worker.log")
            self.aux_pids["rq"] = [self.aux["rq"].pid]
        wait_port(self.port)
        time.sleep(2 + self.workers)
        return self


class FloorServer(Server):
    def __init__(self, name: str, run_dir: Path, redis_url: str, redis_pid: int | None,
                 workers: int = 1) -> None:
        super().__init__(name, run_dir)
        self.redis_url = redis_url
        self.workers = workers
        if redis_pid:
            self.aux_pids["redis"] = [redis_pid]

    def start(self) -> FloorServer:
        self.proc = self.spawn(gunicorn("bench.peers.floor_app:app", self.port, self.workers),
                               {"FLOOR_REDIS_URL": self.redis_url}, "gunicorn.log")
        wait_port(self.port)
        time.sleep(2)
        return self


class SocketIOServer(Server):
    def start(self) -> SocketIOServer:
        self.proc = self.spawn(gunicorn("bench.peers.socketio_app:app", self.port, 1), {},
                               "gunicorn.log")
        wait_port(self.port)
        time.sleep(2)
        return self


class NchanServer(Server):
    def __init__(self, name: str, run_dir: Path, redis_url: str = "",
                 redis_pid: int | None = None, workers: int = 1) -> None:
        super().__init__(name, run_dir)
        self.redis_url = redis_url
        self.workers = workers
        if redis_pid:
            self.aux_pids["redis"] = [redis_pid]

    def start(self) -> NchanServer:
        conf = (ROOT / "bench/peers/nchan.conf.in").read_text()
        redis_http = redis_loc = ""
        if self.redis_url:
            redis_http = (f"upstream nchan_redis {{ nchan_redis_server "
                          f"{self.redis_url.rsplit('/', 1)[0]}; }}")
            redis_loc = "nchan_redis_pass nchan_redis;"
        conf = (conf.replace("@PORT@", str(self.port)).replace("@RUNDIR@", str(self.run_dir))
                .replace("@WORKERS@", str(self.workers)).replace("@REDIS_HTTP@", redis_http)
                .replace("@REDIS@", redis_loc))
        path = self.run_dir / "nginx.conf"
        path.write_text(conf)
        self.proc = self.spawn(["nginx", "-p", str(self.run_dir), "-c", str(path)], {},
                               "nginx.log")
        wait_port(self.port)
        time.sleep(1)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
