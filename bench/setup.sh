#!/usr/bin/env bash
# Benchmark prerequisites: the peers' Python packages into the project venv, nginx with
# the nchan module and redis-server from Debian. Run once: bash bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || bash scripts/setup
.venv/bin/pip install -q -r bench/requirements.txt
if ! [[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]] || ! command -v redis-server >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnginx-mod-nchan nginx redis-server
fi
