#!/usr/bin/env bash
# Every benchmark table with one command. Prints each command line it runs.
#   bash bench/run_all.sh [--profile quick|matrix|full] [--only CONFIG] [--scenario NAME] ...
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" || true   # 10,000 connections need more than the default 1024
bash bench/setup.sh
out=bench/results/$(date +%Y%m%d-%H%M).jsonl
echo "+ .venv/bin/python -m bench.run_all --out $out $*"
PYTHONPATH=. .venv/bin/python -m bench.run_all --out "$out" "$@"
echo "+ .venv/bin/python -m bench.history_pages --store sqlite --out $out"
PYTHONPATH=. .venv/bin/python -m bench.history_pages --store sqlite --out "$out"
echo "+ .venv/bin/python -m bench.history_pages --store cassandra --out $out"
PYTHONPATH=. .venv/bin/python -m bench.history_pages --store cassandra --out "$out" || \
    echo "cassandra history bench skipped (see scripts/cassandra.sh)"
PYTHONPATH=. .venv/bin/python -m bench.report "$out" > "${out%.jsonl}.md"
echo "tables: ${out%.jsonl}.md"
