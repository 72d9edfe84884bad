"""bench/run_all.py's plan: which server each run gets (services and runs recorded, not
started: what is checked is the runner's bookkeeping)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import run_all


def run_async(coro):  # type: ignore[no-untyped-def]
    """``asyncio.run`` on a thread of its own: in the whole suite an earlier test (the
    browser's sync API) leaves an event loop running on the main thread."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class RecordedServer:
    def __init__(self, name: str, log: list[tuple[str, ...]]) -> None:
        self.name = name
        self.log = log
        self.commands: list[str] = []

    def start(self) -> RecordedServer:
        self.log.append(("start", self.name))
        return self

    def stop(self) -> None:
        self.log.append(("stop", self.name))


def run_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
               *argv: str) -> list[tuple[str, ...]]:
    log: list[tuple[str, ...]] = []
    monkeypatch.setattr(run_all, "services", lambda run_dir, cluster=False: log.append(
        ("services", "with cluster" if cluster else "standalone")) or {})
    monkeypatch.setattr(run_all, "stop_services", lambda run_dir: log.append(("stopped",)))
    monkeypatch.setattr(run_all, "empty_stores", lambda env: log.append(("emptied",)))
    monkeypatch.setattr(run_all, "make_server",
                        lambda config, run_dir, env: RecordedServer(config, log))
    monkeypatch.setattr(run_all, "run_one", lambda server, config, target, scenario,
                        transport, *rest: log.append(("run", server.name, scenario,
                                                      transport)))
    monkeypatch.setattr(sys, "argv", ["run_all", "--run-dir", str(tmp_path),
                                      "--out", str(tmp_path / "out.jsonl"), *argv])
    assert run_all.main() == 0
    return log


def test_each_run_starts_on_a_fresh_server(monkeypatch, tmp_path):
    log = run_runner(monkeypatch, tmp_path, "--only", "floor-1w", "--scenario", "direct-500",
                     "--transport", "ws", "--transport", "sse", "--repeat", "2")
    fresh = [("emptied",), ("start", "floor-1w")]
    assert log == [
        ("services", "standalone"),
        *fresh, ("run", "floor-1w", "direct-500", "ws"), ("stop", "floor-1w"),
        *fresh, ("run", "floor-1w", "direct-500", "ws"), ("stop", "floor-1w"),
        *fresh, ("run", "floor-1w", "direct-500", "sse"), ("stop", "floor-1w"),
        *fresh, ("run", "floor-1w", "direct-500", "sse"), ("stop", "floor-1w"),
        ("stopped",)]


def test_reuse_server_keeps_one_server_per_config(monkeypatch, tmp_path):
    log = run_runner(monkeypatch, tmp_path, "--reuse-server", "--only", "floor-1w",
                     "--only", "socketio-1w", "--scenario", "max", "--transport", "ws",
                     "--repeat", "2")
    assert log == [
        ("services", "standalone"), ("emptied",), ("start", "floor-1w"),
        ("run", "floor-1w", "max", "ws"), ("run", "floor-1w", "max", "ws"), ("stop", "floor-1w"),
        ("emptied",), ("start", "socketio-1w"), ("run", "socketio-1w", "max", "ws"),
        ("run", "socketio-1w", "max", "ws"), ("stop", "socketio-1w"), ("stopped",)]


def test_the_cluster_starts_only_for_a_cluster_config(monkeypatch, tmp_path):
    log = run_runner(monkeypatch, tmp_path, "--only", "sb-cluster-2w", "--scenario", "max",
                     "--transport", "ws", "--repeat", "1")
    assert log == [("services", "with cluster"), ("emptied",), ("start", "sb-cluster-2w"),
                   ("run", "sb-cluster-2w", "max", "ws"), ("stop", "sb-cluster-2w"),
                   ("stopped",)]


def test_max_with_more_senders_is_a_row_of_its_own_in_the_report():
    """`max-256` runs the `max` scenario with four times the senders; its results must
    not be averaged into `max`'s."""
    from bench.report import scenario_name

    args = run_all.SCENARIOS["max-256"]
    assert args[args.index("--scenario") + 1] == "max"
    assert args[args.index("--senders") + 1] == "256"
    assert scenario_name({"scenario": "max", "params": {"senders": 256}}) == "max-256"
    assert scenario_name({"scenario": "max", "params": {"senders": 64}}) == "max"
    assert "max-256" in run_all.FULL["nchan-redis"][2]


def test_the_matrix_profile_runs_every_cell_of_the_issue_once(monkeypatch, tmp_path):
    """Every scenario on every transport of the memory engine (one worker) and the Redis
    engine (one and two workers), and the peers' scenarios 1-4 on each of their
    transports: each cell once, on a server of its own."""
    log = run_runner(monkeypatch, tmp_path, "--profile", "matrix")
    runs = [entry[1:] for entry in log if entry[0] == "run"]
    assert len(runs) == len(set(runs))
    cells = set(runs)
    issue_scenarios = {"idle-1k", "idle-5k", "idle-10k", "direct-500", "direct-2000", "group",
                       "max", "storm"}
    for config in ("sb-memory-1w", "sb-redis-1w", "sb-redis-2w"):
        assert {(s, t) for c, s, t in cells if c == config} == {
            (s, t) for s in issue_scenarios for t in ("ws", "sse", "longpoll", "poll")}
    peers = {"floor-1w": ("ws", "sse", "longpoll", "poll"), "socketio-1w": ("ws", "longpoll"),
             "nchan-memory": ("ws", "sse", "longpoll"), "nchan-redis": ("ws", "sse", "longpoll")}
    for config, transports in peers.items():
        assert {(s, t) for c, s, t in cells if c == config} == {
            (s, t) for s in issue_scenarios - {"storm"} for t in transports}
    assert log.count(("emptied",)) == len(runs)


def test_short_profiles_shorten_the_windows(monkeypatch, tmp_path):
    """quick and matrix run 10 s send windows; full keeps the scenario's 20 s."""
    seen: list[list[str]] = []

    class Done(Exception):
        pass

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        raise Done

    monkeypatch.setattr(run_all.subprocess, "run", fake_run)
    server = type("S", (), {"port": 1, "proc": type("P", (), {"pid": 2})(), "aux_pids": {}})()
    for short, expected in ((True, "10"), (False, "20")):
        with pytest.raises(Done):
            run_all.run_one(server, "floor-1w", "floor", "max", "ws", tmp_path / "o", short)
        assert seen[-1][seen[-1].index("--duration") + 1] == expected


def test_the_load_generators_loop_is_chosen_and_passed_through(monkeypatch, tmp_path):
    """``--loadgen-loop`` reaches the load generator; ``auto`` takes uvloop only where
    it is installed (bench/requirements.txt), and the record names the loop that ran."""
    import importlib.util

    from bench import loadgen

    seen: list[str] = []
    monkeypatch.setattr(run_all, "services", lambda run_dir, cluster=False: {})
    monkeypatch.setattr(run_all, "stop_services", lambda run_dir: None)
    monkeypatch.setattr(run_all, "make_server",
                        lambda config, run_dir, env: RecordedServer(config, []))
    monkeypatch.setattr(run_all, "run_one", lambda *args: seen.append(args[-1]))
    monkeypatch.setattr(sys, "argv", ["run_all", "--run-dir", str(tmp_path),
                                      "--out", str(tmp_path / "out.jsonl"), "--only",
                                      "floor-1w", "--scenario", "max", "--transport", "ws",
                                      "--repeat", "1", "--loadgen-loop", "asyncio"])
    assert run_all.main() == 0
    assert seen == ["asyncio"]
    assert loadgen._loop_factory("asyncio") == ("asyncio", None)
    installed = importlib.util.find_spec("uvloop") is not None
    assert loadgen._loop_factory("auto")[0] == ("uvloop" if installed else "asyncio")


@pytest.mark.redis
def test_a_fresh_server_starts_on_an_empty_redis():
    """What earlier runs left (their event logs, nchan's buffered messages) is gone
    before the next run's server starts; a database the runner was not given is not
    touched. Its own database here, so the other tests' keys stay."""
    from storage.redis_conn import connect
    from tests.services import require_service

    base = require_service("redis").rsplit("/", 1)[0]
    given, other = connect(base + "/9", pool_size=2), connect(base + "/10", pool_size=2)
    try:
        given.mset({"{channel:a}:msg:1": "left", "sbb0123:user:1": "left"})
        other.set("kept", "yes")
        run_all.empty_stores({"SWITCHBOARD_TEST_REDIS_URL": base + "/9"})
        assert given.dbsize() == 0
        assert other.get("kept") == "yes"
    finally:
        other.delete("kept")
        given.close()
        other.close()


def test_the_pivot_puts_each_scenario_in_a_table_of_configs_by_transports(tmp_path, capsys):
    """``bench.report --pivot``: one table per scenario in the issue's order, a row per
    config, a column per transport that ran, medians in each cell and `lost` always."""
    from bench import report

    def rec(label: str, transport: str, scenario: str, **fields) -> dict:
        params = {"users": 10000, "rate": 500.0, "senders": 64}
        return {"label": label, "transport": transport, "scenario": scenario,
                "params": params, "loadavg_start": [0.5], "lost": 0, **fields}

    lines = [rec("sb-redis-2w", "poll", "direct", p99_ms=900.0, send_rate=499.0,
                 server_cpu_s=5.0, delivered=5000),
             rec("sb-redis-2w", "poll", "direct", p99_ms=1100.0, send_rate=501.0,
                 server_cpu_s=7.0, delivered=5000),
             rec("sb-redis-2w", "ws", "idle", kib_per_conn=21.0, live=10000,
                 quiet_server_cpu_pct=9.4),
             rec("floor-1w", "ws", "idle", kib_per_conn=37.8, live=9990,
                 quiet_server_cpu_pct=1.0, lost=10)]
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    assert report.main(["--pivot", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.index("### idle-10k") < out.index("### direct-500")
    assert "| config | ws |\n" in out and "| config | poll |\n" in out
    assert "| floor-1w | 37.8 KiB, 9,990 live, quiet 1.0 %, lost 10 |" in out
    assert "| sb-redis-2w | 21.0 KiB, 10,000 live, quiet 9.4 %, lost 0 |" in out
    assert "| sb-redis-2w | 500/s, p99 1,000.0 ms, 1.200 ms CPU, lost 0 |" in out


def test_a_user_that_never_connected_is_a_send_error_not_a_crash():
    """On an overloaded server some users' connection attempts all fail; a scenario that
    later sends from such a user (the idle probe) counts an error and goes on."""

    from bench import loadgen
    from bench.targets import Conv, User

    run = loadgen.Run(loadgen.parse_args(["--port", "1"]))
    alice, bob = User(1, "t1"), User(2, "t2")
    run_async(run.send_one(alice, Conv(7, [alice, bob])))
    run_async(run.send_while_offline(alice, Conv(7, [alice, bob])))  # the storm's send
    assert run.ledger.errors == 2 and run.ledger.acked == 0
    assert run.ledger.last_error == "user 1 never connected"
    assert run.ledger.expected() == 0  # nothing owed to bob: it was never sent


def test_an_http_error_answer_to_a_send_is_a_send_error():
    """An overloaded server answers some sends 503: counted, and the run goes on."""

    from bench import loadgen
    from bench.targets import Conv, User
    from bench.wire import HttpError

    class Refusing:
        async def send(self, conn, conv, key, text):  # type: ignore[no-untyped-def]
            raise HttpError(503, b'{"error":{"code":"unavailable"}}')

    run = loadgen.Run(loadgen.parse_args(["--port", "1"]))
    run.target = Refusing()  # type: ignore[assignment]
    alice, bob = User(1, "t1"), User(2, "t2")
    run.conns[1] = object()  # type: ignore[assignment]
    run_async(run.send_one(alice, Conv(7, [alice, bob])))
    assert run.ledger.errors == 1 and "HTTP 503" in run.ledger.last_error
    assert run.ledger.expected() == 0


def test_a_poll_answered_503_is_asked_again_with_the_same_cursor():
    """As the SDK does, the load generator's poller retries an overloaded server's
    503 with the same cursor instead of ending: else every event after it counts as
    lost though the server still holds it (the first matrix run over polling)."""
    import asyncio

    from bench.targets import Switchboard, User

    asked: list[str] = []

    async def serve(reader, writer):  # type: ignore[no-untyped-def]
        try:
            await answer(reader, writer)
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            writer.close()  # the client went away

    async def answer(reader, writer):  # type: ignore[no-untyped-def]
        while head := await reader.readuntil(b"\r\n\r\n"):
            path = head.split(b" ")[1].decode()
            asked.append(path)
            if "cursor=c0" in path and asked.count(path) == 1:
                status, body = "503 Service Unavailable", b'{"error":{"code":"unavailable"}}'
            elif "cursor=c0" in path:
                body = json.dumps({"cursor": "c1", "events": [
                    {"id": "c1", "type": "message.created", "data": {"text": "k1 5"}}]}).encode()
                status = "200 OK"
            else:
                cursor = "c0" if "cursor" not in path else "c1"
                status, body = "200 OK", json.dumps({"cursor": cursor, "events": []}).encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()

    async def scenario() -> list[str]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        target = Switchboard(server.sockets[0].getsockname()[1], poll_interval=0.01)
        got: list[str] = []
        conn = await target.connect(User(1, "t"), "poll", lambda user, text: got.append(text))
        for _ in range(300):
            if got:
                break
            await asyncio.sleep(0.01)
        conn.close()
        server.close()
        assert target.retried == 1
        return got

    assert run_async(scenario()) == ["k1 5"]
    retried = [p for p in asked if "cursor=c0" in p]
    assert len(retried) == 2 and retried[0] == retried[1]
