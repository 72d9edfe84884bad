"""JSON lines from bench/run_all.py -> Markdown tables (medians of runs, with spread).

    .venv/bin/python -m bench.report bench/results/quick-1.jsonl [more.jsonl] > tables.md
    .venv/bin/python -m bench.report --pivot FILE.jsonl   # one table per scenario,
                                                          # configs by transports

A cell is ``median [min–max] (n=runs)``; a run whose load average at start was above
the core count is marked with a ``*`` in the load column (taken under load). A pivot
cell holds the medians of the scenario's key figures, ``lost`` always.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def scenario_name(rec: dict) -> str:
    p = rec["params"]
    if rec["scenario"] == "idle":
        return f"idle-{p['users'] // 1000}k"
    if rec["scenario"] == "direct":
        return f"direct-{int(p['rate'])}"
    if rec["scenario"] == "max" and p.get("senders", 64) != 64:
        return f"max-{p['senders']}"
    return rec["scenario"]


def cpu_ms_per_delivery(rec: dict) -> float | None:
    if not rec.get("delivered") or rec.get("server_cpu_s") is None:
        return None
    return round(1000 * rec["server_cpu_s"] / rec["delivered"], 3)


def cell(values: list, digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    spread = f"{min(values):,.{digits}f}–{max(values):,.{digits}f}"
    return f"{med:,.{digits}f} [{spread}] (n={len(values)})"


COLUMNS = {
    "idle": [("connected", "held"), ("live", "live"), ("kib_per_conn", "KiB/conn"),
             ("connect_s", "connect s"), ("quiet_server_cpu_pct", "quiet srv CPU %"),
             ("quiet_redis_cpu_pct", "quiet Redis CPU %"), ("server_cpu_pct", "srv CPU %"),
             ("client_cpu_pct", "client CPU %")],
    "direct": [("send_rate", "sent/s"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"),
               ("p99_ms", "p99 ms"), ("max_ms", "max ms"), ("lost", "lost"),
               ("duplicates", "dup"), ("server_cpu_pct", "srv CPU %"),
               ("cpu_ms", "srv CPU ms/delivery"), ("client_cpu_pct", "client CPU %")],
    "group": [("deliveries_per_s", "deliveries/s"), ("p50_ms", "p50 ms"),
              ("p99_ms", "p99 ms"), ("max_ms", "max ms"), ("lost", "lost"),
              ("duplicates", "dup"), ("server_cpu_pct", "srv CPU %"),
              ("client_cpu_pct", "client CPU %")],
    "max": [("accepted_per_s", "accepted/s"), ("delivered_per_s", "delivered/s"),
            ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("lost", "lost"),
            ("server_cpu_pct", "srv CPU %"), ("redis_cpu_pct", "Redis CPU %"),
            ("rq_cpu_pct", "RQ CPU %"), ("db_cpu_pct", "PostgreSQL CPU %"),
            ("cpu_ms", "srv CPU ms/delivery"),
            ("client_cpu_pct", "client CPU %")],
    "storm": [("connected", "users"), ("caught_up_s", "all caught up s"), ("lost", "lost"),
              ("duplicates", "dup"), ("server_cpu_pct", "srv CPU %"),
              ("client_cpu_pct", "client CPU %")],
}


# scenario kind -> the figures a pivot cell shows: (field, format)
PIVOT = {
    "idle": [("kib_per_conn", "{:.1f} KiB"), ("live", "{:,.0f} live"),
             ("quiet_server_cpu_pct", "quiet {:.1f} %")],
    "direct": [("send_rate", "{:,.0f}/s"), ("p99_ms", "p99 {:,.1f} ms"),
               ("cpu_ms", "{:.3f} ms CPU")],
    "group": [("deliveries_per_s", "{:,.0f}/s"), ("p99_ms", "p99 {:,.1f} ms")],
    "max": [("delivered_per_s", "{:,.0f}/s"), ("p99_ms", "p99 {:,.0f} ms"),
            ("cpu_ms", "{:.3f} ms CPU")],
    "storm": [("caught_up_s", "caught up {:.1f} s")],
}
TRANSPORTS = ("ws", "sse", "longpoll", "poll")


def pivot_cell(runs: list[dict]) -> str:
    parts = []
    for field, fmt in [*PIVOT[runs[0]["scenario"]], ("lost", "lost {:,.0f}")]:
        values = [r[field] for r in runs if r.get(field) is not None]
        if values:
            parts.append(fmt.format(statistics.median(values)))
    return ", ".join(parts)


def scenario_order(scen: str) -> tuple[int, int]:
    """The issue's order (idle, 1:1, group, max, storm), smaller loads first."""
    kind, _, size = scen.partition("-")
    return (list(PIVOT).index(kind) if kind in PIVOT else len(PIVOT),
            int(size.rstrip("k")) if size.rstrip("k").isdigit() else 0)


def pivot(groups: dict[tuple, list[dict]]) -> None:
    for scen in sorted({k[0] for k in groups}, key=scenario_order):
        transports = [t for t in TRANSPORTS if any(k[0] == scen and k[2] == t for k in groups)]
        print(f"### {scen}\n")
        print("| config | " + " | ".join(transports) + " |")
        print("|---" * (len(transports) + 1) + "|")
        for label in sorted({k[1] for k in groups if k[0] == scen}):
            row = [pivot_cell(groups[(scen, label, t)]) if groups.get((scen, label, t))
                   else "–" for t in transports]
            print(f"| {label} | " + " | ".join(row) + " |")
        print()


def main(paths: list[str]) -> int:
    as_pivot = "--pivot" in paths
    paths = [p for p in paths if p != "--pivot"]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    machine = None
    for path in paths:
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            if rec.get("type") == "machine":
                machine = machine or rec
                continue
            if rec.get("type"):
                continue
            rec["cpu_ms"] = cpu_ms_per_delivery(rec)
            groups[(scenario_name(rec), rec["label"], rec["transport"])].append(rec)
    ncpu = (machine or {}).get("nproc") or os.cpu_count() or 1
    if machine:
        print(f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), "
              f"{machine['mem_mib']:,} MiB; load average at start "
              f"{machine['loadavg']}; versions {machine['versions']}\n")
    if as_pivot:
        pivot(groups)
        return 0
    for scen in sorted({k[0] for k in groups}):
        kind = scen.split("-")[0]
        cols = COLUMNS.get(kind, COLUMNS["direct"])
        print(f"### {scen}\n")
        print("| config | transport | " + " | ".join(h for _, h in cols) + " | load at start |")
        print("|---" * (len(cols) + 3) + "|")
        for key in sorted(k for k in groups if k[0] == scen):
            runs = groups[key]
            loads = [r["loadavg_start"][0] for r in runs]
            mark = "*" if max(loads) > ncpu else ""
            row = [cell([r.get(c) for r in runs], 0 if c in ("connected", "live", "lost",
                                                             "duplicates") else
                        (3 if c == "cpu_ms" else 1)) for c, _ in cols]
            print(f"| {key[1]} | {key[2]} | " + " | ".join(row)
                  + f" | {min(loads):.1f}–{max(loads):.1f}{mark} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
