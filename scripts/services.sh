#!/usr/bin/env bash
# Switchboard test services: install (Debian apt) and run throwaway servers on
# free loopback ports, with all state under one run directory.
#
# Run:    bash scripts/services.sh [--run-dir DIR] start KIND...
#         bash scripts/services.sh [--run-dir DIR] stop [KIND...]
#         bash scripts/services.sh [--run-dir DIR] env [KIND...]
#         bash scripts/services.sh nginx-bin
# Source: . scripts/services.sh; sbsvc_start redis postgres; trap sbsvc_stop EXIT
#
# KIND: redis, redis-cluster, postgres, nginx, chromium.
# Run dir: --run-dir DIR, else $SWITCHBOARD_RUN_DIR, else /tmp/switchboard-services.
# `start` is quiet and writes RUNDIR/env.sh; `env` prints the same export lines.
# `stop` ends only the processes whose PIDs are recorded in the run dir.
#
# The functions never call `exit` and do not change the caller's shell options,
# so the file can be sourced by a script that uses `set -euo pipefail`.

SBSVC_DEFAULT_RUN_DIR=/tmp/switchboard-services
SBSVC_DB_NAME=${SWITCHBOARD_TEST_DB_NAME:-switchboard}
SBSVC_DB_USER=${SWITCHBOARD_TEST_DB_USER:-switchboard}
SBSVC_DB_PASSWORD=${SWITCHBOARD_TEST_DB_PASSWORD:-switchboard-test}
SBSVC_START_TIMEOUT=${SWITCHBOARD_SERVICE_TIMEOUT:-60}   # seconds, per service
_SBSVC_APT_UPDATED=${_SBSVC_APT_UPDATED:-0}

# ---------------------------------------------------------------- helpers

sbsvc_run_dir() {
    local d=${SWITCHBOARD_RUN_DIR:-$SBSVC_DEFAULT_RUN_DIR}
    case $d in /*) ;; *) d=$PWD/$d ;; esac
    printf '%s\n' "${d%/}"
}

_sbsvc_err() { printf 'services.sh: %s\n' "$*" >&2; }

# _sbsvc_fail LOGFILE MESSAGE: print message and the log's tail to stderr.
_sbsvc_fail() {
    local log=$1; shift
    _sbsvc_err "$*"
    if [[ -n $log && -s $log ]]; then
        printf -- '----- last lines of %s -----\n' "$log" >&2
        tail -n 40 -- "$log" >&2
        printf -- '-----\n' >&2
    fi
    return 1
}

# _sbsvc_alive PID [NAME]: process exists, is not a zombie, and (if NAME is
# given) its command line mentions NAME -- guards against recycled PIDs.
_sbsvc_alive() {
    local pid=$1 name=${2:-} state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]] || return 1
    if [[ -n $name ]]; then
        local cmd
        cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
        [[ $cmd == *"$name"* ]] || return 1
    fi
    return 0
}

# _sbsvc_read_pid FILE: first line of a pid file (redis pidfile, postmaster.pid).
_sbsvc_read_pid() {
    [[ -r $1 ]] || return 1
    local pid
    IFS= read -r pid <"$1" || [[ -n $pid ]] || return 1
    pid=${pid//[[:space:]]/}
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$pid"
}

# Ports already claimed by services recorded in the run dir.
_sbsvc_claimed_ports() {
    local rd f
    rd=$(sbsvc_run_dir)
    for f in "$rd"/*/port "$rd"/*/*/port; do
        [[ -r $f ]] && cat -- "$f"
    done
    return 0
}

# sbsvc_free_ports N: print N distinct ports that are free on 127.0.0.1 right
# now (the kernel picks them: bind to port 0, all N sockets held at once) and
# that no service in the run dir has recorded.
sbsvc_free_ports() {
    local n=${1:-1} claimed=()
    mapfile -t claimed < <(_sbsvc_claimed_ports)
    python3 - "$n" "${claimed[@]}" <<'PY'
import socket, sys
n, claimed = int(sys.argv[1]), {int(p) for p in sys.argv[2:] if p.isdigit()}
held, ports = [], []
while len(ports) < n:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    held.append(s)
    p = s.getsockname()[1]
    if p not in claimed:
        ports.append(p)
for s in held:
    s.close()
print("\n".join(map(str, ports)))
PY
}

# ---------------------------------------------------------------- apt

_sbsvc_apt_log() { printf '%s/apt.log\n' "$(sbsvc_run_dir)"; }

# _sbsvc_apt ARGS...: apt-get, non-interactive, waiting on the dpkg lock.
_sbsvc_apt() {
    DEBIAN_FRONTEND=noninteractive apt-get -q -y \
        -o DPkg::Lock::Timeout=600 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$@" </dev/null >>"$(_sbsvc_apt_log)" 2>&1
}

_sbsvc_apt_update() {
    [[ $_SBSVC_APT_UPDATED == 1 ]] && return 0
    local i
    for i in 1 2 3 4 5; do
        if _sbsvc_apt update; then _SBSVC_APT_UPDATED=1; return 0; fi
        # another apt may hold the lists lock; give it time
        sleep $((i * 5))
    done
    return 1
}

# True when every package named is installed.
_sbsvc_installed() {
    local p s
    for p in "$@"; do
        s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) || return 1
        [[ $s == installed ]] || return 1
    done
}

# True when apt knows a candidate version for every package named.
_sbsvc_have_candidates() {
    local p c
    for p in "$@"; do
        c=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ && !c {c = $2} END {print c}')
        [[ -n $c && $c != '(none)' ]] || return 1
    done
}

# sbsvc_ensure_packages PKG...: apt-get install what is missing. Runs
# `apt-get update` first only when apt has no candidate for a package, or once
# more if the install fails (stale lists point at removed .debs). Services that
# a package would start (redis-server, nginx, postgresql's main cluster) are
# kept from starting by a policy-rc.d that exits 101 during the install.
sbsvc_ensure_packages() {
    local missing=() p rc=0
    for p in "$@"; do _sbsvc_installed "$p" || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        _sbsvc_err "need root to install: ${missing[*]}"; return 1
    fi
    mkdir -p -- "$(sbsvc_run_dir)" || return 1
    local policy=/usr/sbin/policy-rc.d backup=
    if [[ -e $policy ]]; then
        if ! grep -qx 'exit 101' "$policy"; then
            backup=$(mktemp "$(sbsvc_run_dir)/policy-rc.d.XXXXXX") || return 1
            cp -p -- "$policy" "$backup" || return 1
            printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"
        fi
        policy=            # leave the (already blocking) file in place after
    else
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"
    fi
    if ! _sbsvc_have_candidates "${missing[@]}"; then
        _sbsvc_apt_update || rc=1
    fi
    if ((rc == 0)) && ! _sbsvc_apt install --no-install-recommends "${missing[@]}"; then
        if [[ $_SBSVC_APT_UPDATED != 1 ]] && _sbsvc_apt_update; then
            _sbsvc_apt install --no-install-recommends "${missing[@]}" || rc=1
        else
            rc=1
        fi
    fi
    if [[ -n $backup ]]; then
        cp -p -- "$backup" /usr/sbin/policy-rc.d && rm -f -- "$backup"
    elif [[ -n $policy ]]; then
        rm -f -- "$policy"
    fi
    if ((rc)); then
        _sbsvc_fail "$(_sbsvc_apt_log)" "apt-get install failed: ${missing[*]}"
        return 1
    fi
    return 0
}

# ---------------------------------------------------------------- process control

# _sbsvc_launch DIR LOG CMD...: start CMD in the background, detached from the
# caller's job table, and record its PID in DIR/launch.pid.
_sbsvc_launch() {
    local dir=$1 log=$2; shift 2
    (
        cd / || exit 1
        "$@" </dev/null >>"$log" 2>&1 &
        echo $! >"$dir/launch.pid"
    )
}

# _sbsvc_kill_wait SIGNAL NAME PIDFILE...: signal every live recorded process,
# then wait for all of them (SIGKILL after the timeout). Removes the pid files.
_sbsvc_kill_wait() {
    local sig=$1 name=$2; shift 2
    local f pid pids=() i
    for f in "$@"; do
        pid=$(_sbsvc_read_pid "$f") || { rm -f -- "$f"; continue; }
        if _sbsvc_alive "$pid" "$name"; then
            kill "-$sig" "$pid" 2>/dev/null && pids+=("$pid")
        fi
        rm -f -- "$f"
    done
    ((${#pids[@]})) || return 0
    for ((i = 0; i < 300; i++)); do          # 30 s
        local left=()
        for pid in "${pids[@]}"; do _sbsvc_alive "$pid" "$name" && left+=("$pid"); done
        ((${#left[@]})) || return 0
        pids=("${left[@]}")
        sleep 0.1
    done
    _sbsvc_err "$name did not stop in 30s (PIDs ${pids[*]}); sending SIGKILL"
    kill -KILL "${pids[@]}" 2>/dev/null
    sleep 0.5
    return 0
}

# ---------------------------------------------------------------- redis

_sbsvc_redis_ping() {
    [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]
}

# _sbsvc_redis_node DIR PORT MODE: write the config and start one redis-server
# (MODE standalone|cluster), wait until it answers PING and record its PID.
_sbsvc_redis_node() {
    local dir=$1 port=$2 mode=$3 log=$1/redis.log i pid
    mkdir -p -- "$dir" || return 1
    {
        printf 'bind 127.0.0.1\nport %s\nprotected-mode yes\ndaemonize no\n' "$port"
        printf 'dir "%s"\npidfile "%s/redis.pid"\nlogfile ""\n' "$dir" "$dir"
        printf 'save ""\n'
        if [[ $mode == cluster ]]; then
            printf 'cluster-enabled yes\ncluster-config-file nodes.conf\n'
            printf 'cluster-node-timeout 5000\nappendonly no\n'
        else
            printf 'appendonly yes\nappendfsync everysec\n'
        fi
    } >"$dir/redis.conf"
    printf '%s\n' "$port" >"$dir/port"
    rm -f -- "$dir/redis.pid"
    _sbsvc_launch "$dir" "$log" redis-server "$dir/redis.conf"
    for ((i = 0; i < SBSVC_START_TIMEOUT * 10; i++)); do
        pid=$(_sbsvc_read_pid "$dir/launch.pid") || pid=
        if _sbsvc_redis_ping "$port"; then
            # redis' own pidfile is written at startup; prefer it
            pid=$(_sbsvc_read_pid "$dir/redis.pid") || pid=$(_sbsvc_read_pid "$dir/launch.pid")
            printf '%s\n' "$pid" >"$dir/pid"
            rm -f -- "$dir/launch.pid"
            return 0
        fi
        # no name check: right after the fork the child may not have exec'd yet
        _sbsvc_alive "$pid" || break
        sleep 0.1
    done
    _sbsvc_kill_wait TERM '' "$dir/launch.pid"
    rm -f -- "$dir/port"
    # bind races are retried by the caller
    if grep -q 'Address already in use' "$log" 2>/dev/null; then return 2; fi
    _sbsvc_fail "$log" "redis-server on port $port did not start"
}

_sbsvc_redis_running() {   # DIR: recorded node alive and answering
    local dir=$1 pid port
    pid=$(_sbsvc_read_pid "$dir/pid") || return 1
    port=$(cat -- "$dir/port" 2>/dev/null) || return 1
    _sbsvc_alive "$pid" redis-server && _sbsvc_redis_ping "$port"
}

sbsvc_start_redis() {
    local dir try port rc
    dir=$(sbsvc_run_dir)/redis
    _sbsvc_redis_running "$dir" && return 0
    sbsvc_stop_redis
    rm -rf -- "$dir"
    sbsvc_ensure_packages redis-server || return 1
    for try in 1 2 3; do
        port=$(sbsvc_free_ports 1) || return 1
        if _sbsvc_redis_node "$dir" "$port" standalone; then rc=0; else rc=$?; fi
        ((rc == 2)) || return $rc
        mv -f -- "$dir/redis.log" "$dir/redis.log.$try"
    done
    _sbsvc_fail "$dir/redis.log.3" "redis-server: no free port after 3 tries"
}

sbsvc_stop_redis() {
    local dir
    dir=$(sbsvc_run_dir)/redis
    _sbsvc_kill_wait TERM redis-server "$dir/pid" "$dir/launch.pid"
}

# ---------------------------------------------------------------- redis cluster

_sbsvc_cluster_nodes() {   # print node dirs
    local d
    for d in "$(sbsvc_run_dir)"/redis-cluster/node-*; do
        [[ -d $d ]] && printf '%s\n' "$d"
    done
    return 0
}

_sbsvc_cluster_ok() {
    local d port n=0
    while IFS= read -r d; do
        _sbsvc_redis_running "$d" || return 1
        port=$(cat -- "$d/port")
        [[ $(redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null) == *cluster_state:ok* ]] \
            || return 1
        n=$((n + 1))
    done < <(_sbsvc_cluster_nodes)
    ((n == 3))
}

sbsvc_start_redis_cluster() {
    local base dir ports=() p i try rc=0 addrs=() log claimed=()
    base=$(sbsvc_run_dir)/redis-cluster
    _sbsvc_cluster_ok && return 0
    sbsvc_stop_redis_cluster
    rm -rf -- "$base"
    sbsvc_ensure_packages redis-server || return 1
    mkdir -p -- "$base" || return 1
    log=$base/create.log
    for i in 1 2 3; do
        dir=$base/node-$i
        for try in 1 2 3; do
            # the cluster bus listens on port+10000: both must be free
            mapfile -t claimed < <(_sbsvc_claimed_ports)
            p=$(python3 - "${claimed[@]}" <<'PY'
import socket, sys
claimed = {int(p) for p in sys.argv[1:] if p.isdigit()}
for _ in range(200):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    if p > 55535 or p in claimed or p + 10000 in claimed:
        a.close(); continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 10000))
    except OSError:
        a.close(); b.close(); continue
    a.close(); b.close(); print(p); break
else:
    sys.exit("no free port pair")
PY
            ) || return 1
            if _sbsvc_redis_node "$dir" "$p" cluster; then rc=0; else rc=$?; fi
            ((rc == 2)) || break
            mv -f -- "$dir/redis.log" "$dir/redis.log.$try"
        done
        if ((rc)); then
            ((rc == 2)) && _sbsvc_fail "$dir/redis.log.3" "redis cluster node: no free port"
            sbsvc_stop_redis_cluster; return 1
        fi
        ports+=("$p"); addrs+=("127.0.0.1:$p")
    done
    # --cluster-yes answers the "Can I set the above configuration?" prompt;
    # stdin from /dev/null so nothing can block on a prompt anyway.
    if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 \
            --cluster-yes </dev/null >"$log" 2>&1; then
        _sbsvc_fail "$log" "redis-cli --cluster create failed"
        sbsvc_stop_redis_cluster; return 1
    fi
    for ((i = 0; i < SBSVC_START_TIMEOUT * 10; i++)); do
        _sbsvc_cluster_ok && return 0
        sleep 0.1
    done
    for p in "${ports[@]}"; do
        { echo "== cluster info 127.0.0.1:$p"; redis-cli -h 127.0.0.1 -p "$p" cluster info; } >>"$log" 2>&1
    done
    _sbsvc_fail "$log" "redis cluster did not reach cluster_state:ok"
    sbsvc_stop_redis_cluster
    return 1
}

sbsvc_stop_redis_cluster() {
    local files=() d
    while IFS= read -r d; do files+=("$d/pid" "$d/launch.pid"); done < <(_sbsvc_cluster_nodes)
    ((${#files[@]})) || return 0
    _sbsvc_kill_wait TERM redis-server "${files[@]}"
}

# ---------------------------------------------------------------- postgres

_sbsvc_pg_bindir() {
    local d best=
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/initdb && -x $d/pg_ctl ]] || continue
        best=$d                    # glob sorts; keep the last (newest) version
    done
    [[ -n $best ]] && printf '%s\n' "$best"
}

# Run a command as the postgres OS user (root may not run the server).
_sbsvc_as_postgres() {
    (cd / && setpriv --reuid=postgres --regid=postgres --init-groups \
        env HOME=/var/lib/postgresql LC_ALL=C.UTF-8 "$@")
}

_sbsvc_pg_running() {
    local dir=$1 pid port
    pid=$(_sbsvc_read_pid "$dir/pid") || return 1
    port=$(cat -- "$dir/port" 2>/dev/null) || return 1
    _sbsvc_alive "$pid" postgres || return 1
    "$(_sbsvc_pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1
}

sbsvc_start_postgres() {
    local dir bin port log try i pid ok=0
    dir=$(sbsvc_run_dir)/postgres
    _sbsvc_pg_running "$dir" && return 0
    sbsvc_stop_postgres
    rm -rf -- "$dir"
    bin=$(_sbsvc_pg_bindir) || {
        sbsvc_ensure_packages postgresql || return 1
        bin=$(_sbsvc_pg_bindir) || { _sbsvc_err "no initdb under /usr/lib/postgresql"; return 1; }
    }
    [[ $SBSVC_DB_USER =~ ^[A-Za-z_][A-Za-z0-9_]*$ && $SBSVC_DB_NAME =~ ^[A-Za-z_][A-Za-z0-9_]*$ \
        && $SBSVC_DB_PASSWORD =~ ^[A-Za-z0-9_.~-]+$ ]] \
        || { _sbsvc_err "DB user/name/password must be plain [A-Za-z0-9_] words"; return 1; }
    mkdir -p -- "$dir/data" "$dir/socket" || return 1
    log=$dir/postgres.log
    chown -R postgres:postgres -- "$dir" || return 1
    chmod 700 -- "$dir/data"
    if ! _sbsvc_as_postgres test -w "$dir/data"; then
        _sbsvc_err "user postgres cannot reach $dir (a parent directory is not" \
            "searchable by others); use a run dir under /tmp"
        return 1
    fi
    if ! _sbsvc_as_postgres "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 \
            --locale=C --auth-local=trust --auth-host=scram-sha-256 \
            >"$dir/initdb.log" 2>&1; then
        _sbsvc_fail "$dir/initdb.log" "initdb failed"; return 1
    fi
    # throwaway cluster: durability off for speed
    cat >>"$dir/data/postgresql.conf" <<EOF

# --- switchboard test settings
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/socket'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
logging_collector = off
EOF
    for try in 1 2 3; do
        port=$(sbsvc_free_ports 1) || return 1
        printf '%s\n' "$port" >"$dir/port"
        # pg_ctl -w returns once the server accepts connections; the server
        # detaches from pg_ctl and writes its PID to postmaster.pid.
        if _sbsvc_as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$log" -w \
                -t "$SBSVC_START_TIMEOUT" -o "-p $port" start >"$dir/pg_ctl.log" 2>&1; then
            ok=1; break
        fi
        pid=$(_sbsvc_read_pid "$dir/data/postmaster.pid") && \
            { cp -- "$dir/data/postmaster.pid" "$dir/pid"; _sbsvc_kill_wait INT postgres "$dir/pid"; }
        grep -q 'could not bind\|Address already in use' "$log" 2>/dev/null || break
        mv -f -- "$log" "$log.$try"
    done
    if ((!ok)); then
        rm -f -- "$dir/port"
        _sbsvc_fail "$log" "postgres did not start (pg_ctl: $(tail -n 1 "$dir/pg_ctl.log" 2>/dev/null))"
        return 1
    fi
    pid=$(_sbsvc_read_pid "$dir/data/postmaster.pid") || { _sbsvc_fail "$log" "no postmaster.pid"; return 1; }
    printf '%s\n' "$pid" >"$dir/pid"
    for ((i = 0; i < SBSVC_START_TIMEOUT * 10; i++)); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/socket" -p "$port" -U postgres \
            -d postgres >"$dir/setup.log" 2>&1 <<EOF
CREATE ROLE "$SBSVC_DB_USER" LOGIN CREATEDB PASSWORD '$SBSVC_DB_PASSWORD';
CREATE DATABASE "$SBSVC_DB_NAME" OWNER "$SBSVC_DB_USER";
EOF
    then
        _sbsvc_fail "$dir/setup.log" "creating role/database failed"
        sbsvc_stop_postgres; return 1
    fi
    # the app's way in: TCP + password
    if ! PGPASSWORD=$SBSVC_DB_PASSWORD "$bin/psql" -X -q -h 127.0.0.1 -p "$port" \
            -U "$SBSVC_DB_USER" -d "$SBSVC_DB_NAME" -c 'SELECT 1' >>"$dir/setup.log" 2>&1; then
        _sbsvc_fail "$dir/setup.log" "password login over TCP failed"
        sbsvc_stop_postgres; return 1
    fi
    printf '%s\n' "$SBSVC_DB_USER" >"$dir/user"
    printf '%s\n' "$SBSVC_DB_PASSWORD" >"$dir/password"
    printf '%s\n' "$SBSVC_DB_NAME" >"$dir/dbname"
    return 0
}

sbsvc_stop_postgres() {
    local dir
    dir=$(sbsvc_run_dir)/postgres
    # SIGINT = "fast" shutdown: roll back open transactions, disconnect, exit
    _sbsvc_kill_wait INT postgres "$dir/pid"
}

# ---------------------------------------------------------------- nginx, chromium

# Print the nginx binary path (installs nginx if missing).
sbsvc_nginx_bin() {
    sbsvc_ensure_packages nginx || return 1
    local b
    b=$(command -v nginx 2>/dev/null) || b=/usr/sbin/nginx
    [[ -x $b ]] || { _sbsvc_err "nginx binary not found"; return 1; }
    printf '%s\n' "$b"
}

sbsvc_start_nginx() {
    local had=0 dir pid
    _sbsvc_installed nginx && had=1
    sbsvc_nginx_bin >/dev/null || return 1
    dir=$(sbsvc_run_dir)/nginx
    mkdir -p -- "$dir" && : >"$dir/installed"
    # policy-rc.d blocks the package's own start; if a system nginx appeared
    # anyway during *this* install, stop it (tests run their own nginx).
    if ((!had)) && pid=$(_sbsvc_read_pid /run/nginx.pid) && _sbsvc_alive "$pid" nginx; then
        _sbsvc_err "the nginx package started the system nginx (PID $pid); stopping it"
        "$(sbsvc_nginx_bin)" -s quit 2>/dev/null || kill -QUIT "$pid"
    fi
    return 0
}

sbsvc_start_chromium() {
    sbsvc_ensure_packages chromium chromium-driver || return 1
    local dir
    dir=$(sbsvc_run_dir)/chromium
    mkdir -p -- "$dir" && : >"$dir/installed"
}

# ---------------------------------------------------------------- env

# sbsvc_env [KIND...]: export lines for the running/installed services.
sbsvc_env() {
    local rd kinds=("$@") k d port nodes first
    rd=$(sbsvc_run_dir)
    ((${#kinds[@]})) || kinds=(redis redis-cluster postgres nginx chromium)
    for k in "${kinds[@]}"; do
        case $k in
        redis)
            _sbsvc_redis_running "$rd/redis" || continue
            port=$(cat -- "$rd/redis/port")
            printf "export SWITCHBOARD_TEST_REDIS_URL='redis://127.0.0.1:%s/0'\n" "$port"
            ;;
        redis-cluster)
            nodes='' first=''
            while IFS= read -r d; do
                _sbsvc_redis_running "$d" || { nodes=; break; }
                port=$(cat -- "$d/port")
                first=${first:-$port}
                nodes+=${nodes:+,}127.0.0.1:$port
            done < <(_sbsvc_cluster_nodes)
            [[ -n $nodes ]] || continue
            printf "export SWITCHBOARD_TEST_REDIS_CLUSTER_URL='redis://127.0.0.1:%s'\n" "$first"
            printf "export SWITCHBOARD_TEST_REDIS_CLUSTER_NODES='%s'\n" "$nodes"
            ;;
        postgres)
            d=$rd/postgres
            _sbsvc_pg_running "$d" || continue
            printf "export SWITCHBOARD_TEST_DATABASE_URL='postgresql+psycopg://%s:%s@127.0.0.1:%s/%s'\n" \
                "$(cat -- "$d/user")" "$(cat -- "$d/password")" "$(cat -- "$d/port")" "$(cat -- "$d/dbname")"
            ;;
        nginx)
            if [[ ! -e $rd/nginx/installed ]] || ! _sbsvc_installed nginx; then continue; fi
            printf "export SWITCHBOARD_TEST_NGINX_BIN='%s'\n" "$(command -v nginx || echo /usr/sbin/nginx)"
            ;;
        chromium)
            if [[ ! -e $rd/chromium/installed ]] || ! _sbsvc_installed chromium chromium-driver; then
                continue
            fi
            printf "export SWITCHBOARD_TEST_CHROMIUM='/usr/bin/chromium'\n"
            printf "export SWITCHBOARD_TEST_CHROMEDRIVER='/usr/bin/chromedriver'\n"
            ;;
        *) _sbsvc_err "unknown kind: $k"; return 2 ;;
        esac
    done
    return 0
}

_sbsvc_write_env() {
    local rd
    rd=$(sbsvc_run_dir)
    [[ -d $rd ]] || return 0
    sbsvc_env >"$rd/env.sh.tmp" && mv -f -- "$rd/env.sh.tmp" "$rd/env.sh"
}

# ---------------------------------------------------------------- start/stop

sbsvc_start() {
    local k rc=0
    ((${#@})) || { _sbsvc_err "start: name at least one KIND"; return 2; }
    for k in "$@"; do
        case $k in
        redis|redis-cluster|postgres|nginx|chromium) ;;
        *) _sbsvc_err "unknown kind: $k (redis redis-cluster postgres nginx chromium)"; return 2 ;;
        esac
    done
    mkdir -p -- "$(sbsvc_run_dir)" || return 1
    for k in "$@"; do
        case $k in
        redis) sbsvc_start_redis ;;
        redis-cluster) sbsvc_start_redis_cluster ;;
        postgres) sbsvc_start_postgres ;;
        nginx) sbsvc_start_nginx ;;
        chromium) sbsvc_start_chromium ;;
        esac || { rc=1; break; }
    done
    _sbsvc_write_env
    return $rc
}

# sbsvc_stop [KIND...]: stop recorded processes (all kinds by default). Safe to
# call repeatedly, and when nothing was started; always returns 0.
sbsvc_stop() {
    local k kinds=("$@")
    [[ -d $(sbsvc_run_dir) ]] || return 0
    ((${#kinds[@]})) || kinds=(redis redis-cluster postgres)
    for k in "${kinds[@]}"; do
        case $k in
        redis) sbsvc_stop_redis ;;
        redis-cluster) sbsvc_stop_redis_cluster ;;
        postgres) sbsvc_stop_postgres ;;
        nginx|chromium) ;;   # nothing runs
        *) _sbsvc_err "unknown kind: $k" ;;
        esac
    done
    _sbsvc_write_env
    return 0
}

_sbsvc_main() {
    set -u -o pipefail
    while (($#)); do
        case $1 in
        --run-dir) [[ $# -ge 2 ]] || { _sbsvc_err "--run-dir needs a value"; return 2; }
            SWITCHBOARD_RUN_DIR=$2; shift 2 ;;
        --run-dir=*) SWITCHBOARD_RUN_DIR=${1#*=}; shift ;;
        *) break ;;
        esac
    done
    export SWITCHBOARD_RUN_DIR=${SWITCHBOARD_RUN_DIR:-$SBSVC_DEFAULT_RUN_DIR}
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
    start) sbsvc_start "$@" ;;
    stop) sbsvc_stop "$@" ;;
    env) sbsvc_env "$@" ;;
    nginx-bin) sbsvc_nginx_bin ;;
    free-ports) sbsvc_free_ports "${1:-1}" ;;
    *)
        printf 'usage: %s [--run-dir DIR] start|stop|env [KIND...]\n' "${0##*/}" >&2
        printf '       %s nginx-bin | free-ports N\n' "${0##*/}" >&2
        printf 'KIND: redis redis-cluster postgres nginx chromium\n' >&2
        return 2 ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    _sbsvc_main "$@"
    exit $?
fi
