"""Real servers for tests: the gateway under gunicorn's gevent worker, on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent

# Fast hashing and short intervals so tests observe heartbeats and timeouts quickly.
TEST_ENV = {
    "SWITCHBOARD_PASSWORD_HASH_LOG2N": "4",
    "SWITCHBOARD_SSE_HEARTBEAT": "1",
    "SWITCHBOARD_WS_PING_INTERVAL": "1",
    "SWITCHBOARD_PRESENCE_HEARTBEAT": "0.5",
    "SWITCHBOARD_PRESENCE_TIMEOUT": "2",
    "SWITCHBOARD_PRESENCE_SWEEP_INTERVAL": "0.2",
    "SWITCHBOARD_SEND_RATE_PER_SECOND": "1000",
    "SWITCHBOARD_SEND_RATE_BURST": "1000",
    "SWITCHBOARD_TYPING_INTERVAL": "0.1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_serving(url: str, proc: subprocess.Popen, timeout: float, name: str,
                 describe: Callable[[], str]) -> bool:
    """Poll ``url``'s /v1/health until it answers 200 (True) or ``timeout`` passes
    (False); raise with ``describe()`` if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{describe()}")
        try:
            if requests.get(url + "/v1/health", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


class _Process:
    """A child process with a log file, stopped by its PID."""

    log_path: Path
    proc: subprocess.Popen | None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class GatewayServer(_Process):
    """``gunicorn -c config/gunicorn.conf.py wsgi:app`` in a subprocess."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None,
                 port: int | None = None, new_session: bool = False) -> None:
        self.data_dir = data_dir
        # Its own process group, so kill() can SIGKILL the master and its workers at
        # once (killing only the master leaves the workers serving for a second).
        self.new_session = new_session
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **TEST_ENV, "SWITCHBOARD_DATA_DIR": str(data_dir),
                    **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir / "gunicorn.log"

    def start(self, timeout: float = 30.0) -> GatewayServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
             "--bind", f"127.0.0.1:{self.port}", "wsgi:app"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=self.new_session)
        if wait_serving(self.url, self.proc, timeout, "gateway", self.log_tail):
            return self
        self.stop()
        raise RuntimeError(f"gateway did not start:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> None:
        """SIGINT is gunicorn's quick shutdown; SIGTERM (graceful) waits for idle clients."""
        super().stop(sig, timeout)

    def kill(self) -> None:
        """SIGKILL the whole node, master and workers (needs ``new_session=True``)."""
        assert self.proc is not None and self.new_session
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


class WorkerProcess(_Process):
    """``python -m workers`` (an RQ SimpleWorker draining the persist stream)."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"worker-{free_port()}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        log_dir = self.log_path.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        # Its own process group: RQ runs the job scheduler as a child process, which a
        # SIGKILL of the worker alone would leave running (the tests kill workers).
        self.proc = subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        group = self.proc.pid  # the session leader's pid names the group
        if self.proc.poll() is None:
            os.killpg(group, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(group, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError):  # whatever it left behind
            os.killpg(group, signal.SIGKILL)

