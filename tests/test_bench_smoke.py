"""The load generator runs against a test gateway and loses nothing (no timing checked)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.servers import ROOT, GatewayServer

pytestmark = pytest.mark.slow


def run_loadgen(tmp_path, *args: str) -> dict:  # type: ignore[no-untyped-def]
    """One loadgen run against a fresh test gateway; its result record."""
    gateway = GatewayServer(tmp_path / "gw").start()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", "--port", str(gateway.port), *args,
             "--drain", "10", "--timeout", "90", "--server-pid", str(gateway.proc.pid)],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        gateway.stop()
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("transport", ["ws", "sse", "longpoll", "poll"])
def test_loadgen_reports_zero_lost(tmp_path, transport):
    record = run_loadgen(tmp_path, "--transport", transport, "--scenario", "direct",
                         "--users", "6", "--rate", "20", "--duration", "2")
    assert record["connected"] == 6
    assert record["acked"] > 0 and record["send_errors"] == 0
    assert record["lost"] == 0 and record["duplicates"] == 0
    assert record["delivered"] == record["acked"]


def test_idle_holds_everyone_reports_the_quiet_cpu_and_reaches_each_user(tmp_path):
    record = run_loadgen(tmp_path, "--transport", "sse", "--scenario", "idle",
                         "--users", "6", "--duration", "1", "--quiet-after", "0.5")
    assert record["connected"] == 6 and record["live"] == 6
    assert record["params"]["quiet_after"] == 0.5  # recorded with the figures
    assert record["quiet_server_cpu_pct"] >= 0 and record["lost"] == 0
