"""Process and machine facts for benchmark results: CPU time, RSS, load, versions."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(p) for p in task.read_text().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    seen = [pid]
    for child in children(pid):
        seen += tree(child)
    return seen


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def tree_cpu_seconds(root: int) -> float:
    """CPU of ``root`` and its descendants now alive, plus the children it has reaped:
    a PostgreSQL backend that exits between two readings keeps its share (it moves
    into the postmaster's cutime/cstime)."""
    try:
        fields = Path(f"/proc/{root}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    reaped = (int(fields[13]) + int(fields[14])) / TICK
    return reaped + cpu_seconds(tree(root))


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_mib": mem,
            "kernel": platform.release(), "python": platform.python_version()}


def versions(venv_python: str) -> dict:
    code = ("import importlib.metadata as m\n"
            "for p in ('flask','gevent','gunicorn','redis','hiredis','python-socketio',"
            "'python-engineio','simple-websocket'):\n"
            "    try: print(p, m.version(p))\n"
            "    except m.PackageNotFoundError: pass\n")
    out = subprocess.run([venv_python, "-c", code], capture_output=True, text=True).stdout
    found = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    for name, cmd in (("redis-server", ["redis-server", "--version"]),
                      ("nginx", ["nginx", "-v"]),
                      ("nchan", ["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"])):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            found[name] = (res.stdout + res.stderr).strip().splitlines()[0][:80]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    return found
