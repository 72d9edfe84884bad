"""Redis cost of one 1:1 message in the scaled mode, counted by Redis itself.

    .venv/bin/python -m bench.redis_cost --redis redis://127.0.0.1:PORT/0 \\
        --database postgresql+psycopg://... [--messages 200] [--transport ws]

Starts one gateway worker (and an RQ worker) on that Redis, signs up two users, opens
the receiver's feed, then sends ``--messages`` messages over HTTP one at a time and
waits until each arrived. Prints the commands Redis executed per message (INFO
commandstats; a script's inner commands count) and the commands clients sent outside
scripts (MONITOR; each command of a pipeline counts), by name. Use a Redis nothing
else is using while it runs.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

from bench.servers import SwitchboardServer
from switchboard_client import Api, open_transport


def _calls(client: redis.Redis) -> collections.Counter[str]:
    return collections.Counter({k.removeprefix("cmdstat_"): int(v["calls"])
                                for k, v in client.info("commandstats").items()})


def measure(args: argparse.Namespace) -> dict:
    client = redis.Redis.from_url(args.redis, decode_responses=True)
    with tempfile.TemporaryDirectory(prefix="sb-redis-cost-") as tmp:
        server = SwitchboardServer("sb", Path(tmp), workers=1, redis_url=args.redis,
                                   database_url=args.database).start()
        try:
            url = f"http://127.0.0.1:{server.port}"
            alice, bob = Api(url), Api(url)
            for api in (alice, bob):
                api.sign_up(f"cost{uuid.uuid4().hex[:10]}", "password123")
            conversation = alice.direct(bob.user_id)["id"]
            feed = open_transport(args.transport, bob)
            for i in range(5):  # warm caches and connections
                alice.send(conversation, f"warm {i}")
            feed.collect(5, 10, kind="message.created")
            sent: list[str] = []
            stop = threading.Event()

            def monitor() -> None:
                with client.monitor() as m:
                    for command in m.listen():
                        if stop.is_set():
                            return
                        if command.get("client_type") != "lua":
                            sent.append(command["command"].split(" ", 1)[0].upper())

            watcher = threading.Thread(target=monitor, daemon=True)
            watcher.start()
            time.sleep(0.5)
            before = _calls(client)
            for i in range(args.messages):
                alice.send(conversation, f"m {i}")
                feed.collect(1, 10, kind="message.created")
            after = _calls(client)
            stop.set()
            client.ping()  # lets the monitor see one more command and return
            watcher.join(5)
            feed.close()
        finally:
            server.stop()
    executed = after - before
    executed.pop("info", None)
    outside = collections.Counter(re.sub(r"[^A-Z|]", "", c) for c in sent)
    outside.pop("INFO", None)
    n = args.messages
    return {"messages": n, "transport": args.transport,
            "executed_per_message": round(sum(executed.values()) / n, 1),
            "sent_outside_scripts_per_message": round(sum(outside.values()) / n, 1),
            "executed": {k: round(v / n, 2) for k, v in executed.most_common()},
            "sent_outside_scripts": {k: round(v / n, 2) for k, v in outside.most_common()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--redis", required=True)
    p.add_argument("--database", default="", help="SQLAlchemy URL; default SQLite")
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--transport", default="ws", choices=["ws", "sse", "longpoll", "poll"])
    result = measure(p.parse_args())
    for key in ("messages", "transport", "executed_per_message",
                "sent_outside_scripts_per_message"):
        print(f"{key}: {result[key]}")
    for kind in ("executed", "sent_outside_scripts"):
        print(f"{kind} per message: " + ", ".join(f"{k} {v}" for k, v in result[kind].items()
                                                  if v >= 0.05))


if __name__ == "__main__":
    main()
