"""bench/procstat.py: the CPU a helper's process tree used, children that ended included
(PostgreSQL's backends come and go between two readings)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import procstat

_BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def test_a_child_that_ended_between_readings_is_counted():
    before = procstat.tree_cpu_seconds(os.getpid())
    subprocess.run([sys.executable, "-c", _BURN], check=True)  # ran and was reaped
    assert procstat.tree_cpu_seconds(os.getpid()) - before >= 0.25


def test_a_living_child_is_counted_and_not_twice_once_reaped():
    child = subprocess.Popen([sys.executable, "-c", f"input()\n{_BURN}\ninput()"],
                             stdin=subprocess.PIPE)
    try:
        time.sleep(0.3)  # its start-up done, waiting to burn
        before = procstat.tree_cpu_seconds(os.getpid())
        started = procstat.cpu_seconds([child.pid])
        own = procstat.cpu_seconds([os.getpid()])
        child.stdin.write(b"\n")
        child.stdin.flush()
        deadline = time.monotonic() + 10
        while (procstat.cpu_seconds([child.pid]) - started < 0.25
               and time.monotonic() < deadline):
            time.sleep(0.01)
        alive = procstat.tree_cpu_seconds(os.getpid())
        assert alive - before >= 0.25
    finally:
        child.communicate(b"\n", timeout=10)
    gone = procstat.tree_cpu_seconds(os.getpid())
    ours = procstat.cpu_seconds([os.getpid()]) - own
    assert gone - alive < ours + 0.1  # the child's time moved, it was not added again
    assert procstat.tree_cpu_seconds(-1) == 0.0  # a process that is gone reads as none
