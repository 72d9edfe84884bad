"""Discovery (``GET /v1/discover``), leased worker ids across real gateway processes, and
docs/deploy.md's nginx configuration in front of two nodes."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from switchboard_client import Api, NodeDirectory, open_transport
from tests.cluster import Deployment
from tests.servers import ROOT, GatewayServer, free_port, wait_serving
from tests.services import require_service

DISCOVERY_TTL = 3.0  # tests/cluster.py


def test_memory_engine_discovers_just_this_node_without_sign_in(client):
    body = client.get("/v1/discover", base_url="http://chat.test:8080").get_json()
    assert body["node"] == {"url": "http://chat.test:8080", "connections": 0, "workers": 1}
    assert body["nodes"] == [body["node"]]


def test_a_served_memory_gateway_announces_its_bind_address(gateway: GatewayServer):
    body = Api(gateway.url).discover()
    assert body["node"]["url"] == gateway.url
    assert NodeDirectory([gateway.url]).pick() == gateway.url


@pytest.fixture(scope="module")
def three_workers_each(tmp_path_factory) -> Iterator[Deployment]:  # type: ignore[no-untyped-def]
    deployment = Deployment(tmp_path_factory.mktemp("discovery"), require_service("redis"),
                            workers="3")
    try:
        deployment.node()
        deployment.node()
        yield deployment
    finally:
        deployment.stop()


def _nodes(url: str) -> dict[str, dict]:
    return {n["url"]: n for n in requests.get(url + "/v1/discover", timeout=5).json()["nodes"]}


@pytest.mark.redis
def test_no_two_live_workers_hold_the_same_worker_id(three_workers_each):
    """Six workers on two nodes, started three at a time: six distinct leased ids."""
    seen: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + 60
    while len(seen) < 6 and time.monotonic() < deadline:
        for node in three_workers_each.nodes:
            # A fresh connection each time, so each of the node's workers gets asked.
            health = requests.get(node.url + "/v1/health", timeout=5,
                                  headers={"Connection": "close"}).json()
            seen[(node.url, health["pid"])] = health["worker_id"]
    assert len(seen) == 6, seen
    assert len(set(seen.values())) == 6, seen


@pytest.mark.redis
def test_discover_lists_every_node_with_its_load_and_recommends_the_least_loaded(
        three_workers_each):
    a, b = three_workers_each.nodes
    nodes = _nodes(a.url)
    assert set(nodes) == {a.url, b.url}
    assert all(n["workers"] == 3 for n in nodes.values())
    user = three_workers_each.user(a)
    feeds = [open_transport(kind, user) for kind in ("sse", "ws", "sse", "ws")]
    try:
        # Each worker refreshes its load every third of the TTL; reads are cached 1 s.
        deadline = time.monotonic() + DISCOVERY_TTL + 3
        while _nodes(b.url)[a.url]["connections"] < 4:
            assert time.monotonic() < deadline, _nodes(b.url)
            time.sleep(0.2)
        # Redis now holds the load; a worker's cached reading is at most 1 s old.
        time.sleep(1.1)
        for ask in (a.url, b.url):
            for _ in range(4):  # a fresh connection each: several workers answer
                assert Api(ask).discover()["node"]["url"] == b.url
        assert NodeDirectory([a.url]).pick() == b.url
    finally:
        for feed in feeds:
            feed.close()


# --- nginx (docs/deploy.md) in front of two nodes ------------------------------------

def deploy_doc_nginx_block() -> str:
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    return blocks[0]


class DocumentedNginx:
    """docs/deploy.md's nginx block with test addresses, in the foreground, by PID."""

    def __init__(self, binary: str, run_dir: Path, upstreams: list[str]) -> None:
        self.binary, self.dir = binary, run_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        block = deploy_doc_nginx_block()
        servers = "".join(f"    server {u} max_fails=1 fail_timeout=5s;\n" for u in upstreams)
        block, count = re.subn(r"(?m)^    server 10\.0\.0\.\d+:8080[^\n]*\n", "", block)
        assert count == 2
        block = block.replace("    least_conn;\n", "    least_conn;\n" + servers)
        block = block.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        temp = "".join(f"    {kind}_temp_path {run_dir}/tmp/{kind};\n"
                       for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.conf = run_dir / "nginx.conf"
        self.conf.write_text(
            f"daemon off;\nworker_processes 1;\npid {run_dir}/nginx.pid;\n"
            f"error_log stderr warn;\nevents {{ worker_connections 512; }}\n"
            f"http {{\n    access_log {run_dir}/access.log;\n{temp}{block}}}\n")
        self.proc: subprocess.Popen | None = None
        self.log = run_dir / "nginx.log"

    def start(self) -> DocumentedNginx:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([self.binary, "-p", str(self.dir), "-c", str(self.conf),
                                      "-e", "stderr"], stdout=out, stderr=subprocess.STDOUT)
        if wait_serving(self.url, self.proc, 20, "nginx", self.log.read_text):
            return self
        self.stop()
        raise RuntimeError(f"nginx did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.mark.redis
def test_documented_nginx_config_carries_sse_ws_and_long_poll_to_two_nodes(
        three_workers_each, tmp_path):
    binary = require_service("nginx")
    nodes = three_workers_each.nodes
    proxy = DocumentedNginx(binary, tmp_path, [n.url.removeprefix("http://")
                                               for n in nodes]).start()
    try:
        receiver = Api(proxy.url)
        receiver.sign_up(f"ngx{time.time_ns() % 10**9}", "password123")
        sender = three_workers_each.user(nodes[0])
        conversation = sender.direct(receiver.user_id)["id"]
        with open_transport("sse", receiver) as sse, open_transport("ws", receiver) as ws, \
                open_transport("longpoll", receiver, wait=20) as longpoll:
            sent = [f"through nginx {i}" for i in range(5)]
            started = time.monotonic()
            for text in sent:
                Api(proxy.url, token=sender.token).send(conversation, text)
            for feed in (sse, ws, longpoll):
                got = feed.collect(5, 15, kind="message.created")
                assert [e["data"]["text"] for e in got] == sent, feed.name
            # Not held back in a buffer: all three saw every message promptly.
            assert time.monotonic() - started < 10
            # Quiet streams survive past a heartbeat (SSE 1 s, WS ping 1 s in tests).
            time.sleep(2.5)
            Api(proxy.url, token=sender.token).send(conversation, "after a pause")
            for feed in (sse, ws):
                got = feed.collect(1, 10, kind="message.created")
                assert [e["data"]["text"] for e in got] == ["after a pause"], feed.name
    finally:
        proxy.stop()
