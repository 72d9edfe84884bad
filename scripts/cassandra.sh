#!/usr/bin/env bash
# Run a throwaway single-node Apache Cassandra for Switchboard's tests.
#
#   scripts/cassandra.sh fetch            resolve cassandra-all + runtime deps from Maven Central
#   scripts/cassandra.sh start DIR PORT   run a node with all state under DIR, CQL on 127.0.0.1:PORT
#   scripts/cassandra.sh stop DIR         stop the node started in DIR
#
# There is no Cassandra tarball here (only package registries are reachable), so the
# node is assembled from the cassandra-all artifact on Maven Central and started by
# calling org.apache.cassandra.service.CassandraDaemon directly with our own yaml,
# logback config and JVM flags (the job bin/cassandra and cassandra-env.sh would do).
#
# Exit codes: 0 ok, 1 failure, 2 usage, 3 prerequisite missing (java 17, or mvn on a cold cache);
# on 3 the single line printed starts with "cassandra.sh: SKIP:" so a test suite can
# turn it into a skip reason.
#
# Environment knobs (all optional):
#   SWITCHBOARD_CACHE              cache root (default ~/.cache/switchboard)
#   SWITCHBOARD_CASSANDRA_VERSION  preferred cassandra-all version (default 5.0.8); if Maven
#                                  Central lacks it, the newest 5.0.x is used instead
#   SWITCHBOARD_CASSANDRA_HEAP     max heap (default 1g; initial heap is 512m or less)
#   SWITCHBOARD_CASSANDRA_TIMEOUT  seconds to wait for CQL readiness (default 180)
#   SWITCHBOARD_CASSANDRA_JMX=1    also open JMX on a free localhost port (for nodetool);
#                                  off by default: tests do not need it and it is one
#                                  more port to collide on
#   SWITCHBOARD_CASSANDRA_JVM_OPTS extra JVM flags, whitespace-separated
#   SWITCHBOARD_PYTHON             python with cassandra-driver for the readiness query
#                                  (default: the repo's .venv, else python3)
#   JAVA                           java binary (default: java on PATH)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

PREFERRED_VERSION=${SWITCHBOARD_CASSANDRA_VERSION:-5.0.8}
# Newest 5.0.x when the preferred version is missing. The upper bound is written as a
# high patch number rather than "5.1" so that Maven's ordering cannot pick a
# 5.1-alpha/beta (those sort below 5.1 but above any 5.0.x).
FALLBACK_RANGE='[5.0.0,5.0.99999]'
CACHE_ROOT=${SWITCHBOARD_CACHE:-${HOME:?}/.cache/switchboard}/cassandra
# Keep Maven's download repository inside our cache too, so nothing lands in ~/.m2.
MAVEN_REPO=$CACHE_ROOT/m2
# Pinned so the build does not depend on whatever plugin version the local Maven defaults to.
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1
JAVA=${JAVA:-java}
HEAP_MAX=${SWITCHBOARD_CASSANDRA_HEAP:-1g}
START_TIMEOUT=${SWITCHBOARD_CASSANDRA_TIMEOUT:-180}

die() { echo "cassandra.sh: $*" >&2; exit 1; }
skip() { echo "cassandra.sh: SKIP: $*"; exit 3; }
usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

now() { date +%s.%N; }
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

need_mvn() {
    command -v mvn >/dev/null 2>&1 || skip "mvn not found on PATH (needed once to fetch Cassandra from Maven Central)"
}

need_java17() {
    command -v "$JAVA" >/dev/null 2>&1 || skip "java not found on PATH (Cassandra 5.0 needs JDK 17)"
    local v
    v=$("$JAVA" -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ { print $2 }')
    # The add-opens list and GC flags below are the JDK 17 set; Cassandra 5.0 does not run on 21+.
    [[ $v == 17 ]] || skip "java is version ${v:-unknown}, Cassandra 5.0 here needs JDK 17 (set JAVA=/path/to/jdk17/bin/java)"
}

find_python() {
    if [[ -n ${SWITCHBOARD_PYTHON:-} ]]; then
        echo "$SWITCHBOARD_PYTHON"
    elif [[ -x $REPO_ROOT/.venv/bin/python ]]; then
        echo "$REPO_ROOT/.venv/bin/python"
    elif command -v python3 >/dev/null 2>&1; then
        command -v python3
    fi
}

# ---------------------------------------------------------------------------------------
# fetch

# A lib/ folder counts only once the .complete marker is written, so an interrupted
# download is never mistaken for a usable install.
lib_complete() { [[ -f $CACHE_ROOT/$1/lib/.complete ]]; }

# Resolve cassandra-all at version spec $1 (exact version or Maven range) with all its
# runtime dependencies. Prints the resolved version; returns non-zero if Maven fails.
mvn_resolve() {
    local spec=$1 work version
    mkdir -p "$CACHE_ROOT"
    work=$(mktemp -d "$CACHE_ROOT/.resolve.XXXXXX")
    # A throwaway pom whose only purpose is to declare the one dependency.
    cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>switchboard.local</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$spec</version>
    </dependency>
  </dependencies>
</project>
EOF
    if ! mvn -B -q -f "$work/pom.xml" -Dmaven.repo.local="$MAVEN_REPO" \
        "$DEPENDENCY_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$work/lib" >"$work/mvn.log" 2>&1; then
        echo "cassandra.sh: maven could not resolve cassandra-all $spec:" >&2
        # First real error line (minus colour codes); Maven's closing lines are boilerplate.
        sed 's/\x1b\[[0-9;]*m//g' "$work/mvn.log" | grep -m 1 '^\[ERROR\] .' | cut -c1-300 >&2 || true
        rm -rf "$work"
        return 1
    fi
    local jars=("$work"/lib/cassandra-all-*.jar)
    [[ -f ${jars[0]} ]] || { rm -rf "$work"; die "maven ran but produced no cassandra-all jar"; }
    version=${jars[0]##*/cassandra-all-}
    version=${version%.jar}
    rm -rf "${CACHE_ROOT:?}/$version"
    mkdir -p "$CACHE_ROOT/$version"
    mv "$work/lib" "$CACHE_ROOT/$version/lib"
    touch "$CACHE_ROOT/$version/lib/.complete"
    rm -rf "$work"
    echo "$version"
}

# Make sure a usable lib/ is cached; sets RESOLVED_VERSION and LIB_DIR.
do_fetch() {
    # Which version the preferred spec ended up as, so a warm call never touches Maven
    # (also when the preferred version was missing and we fell back to the newest 5.0.x).
    local pointer="$CACHE_ROOT/resolved-$PREFERRED_VERSION" version=""
    if [[ -f $pointer ]]; then
        version=$(<"$pointer")
        lib_complete "$version" || version=""
    fi
    if [[ -z $version ]]; then
        need_mvn
        # Parallel callers (e.g. several pytest workers) on a cold cache: one downloads,
        # the others wait for it and then take the fast path.
        mkdir -p "$CACHE_ROOT"
        exec 9>"$CACHE_ROOT/.fetch.lock"
        flock -w 900 9 || die "timed out waiting for another fetch (lock $CACHE_ROOT/.fetch.lock)"
        if [[ -f $pointer ]] && lib_complete "$(<"$pointer")"; then
            version=$(<"$pointer")
        fi
    fi
    if [[ -z $version ]]; then
        local t0; t0=$(now)
        echo "cassandra.sh: fetching cassandra-all $PREFERRED_VERSION from Maven Central ..." >&2
        if ! version=$(mvn_resolve "$PREFERRED_VERSION"); then
            echo "cassandra.sh: falling back to the newest 5.0.x on Maven Central" >&2
            version=$(mvn_resolve "$FALLBACK_RANGE") || die "could not resolve any cassandra-all 5.0.x"
        fi
        echo "$version" >"$pointer"
        echo "cassandra.sh: fetched cassandra-all $version in $(elapsed_since "$t0")s" >&2
    fi
    exec 9>&- 2>/dev/null || true
    RESOLVED_VERSION=$version
    LIB_DIR=$CACHE_ROOT/$version/lib
}

# ---------------------------------------------------------------------------------------
# start

# Is TCP port $1 on 127.0.0.1 free to bind? Binding is the honest test; without a
# python we fall back to "nobody accepts connections there".
port_free() {
    local py; py=$(find_python)
    if [[ -n $py ]]; then
        "$py" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
    else
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 1; fi
    fi
}

# A free port, not equal to any of the arguments (ports already promised to this node).
pick_port() {
    local p taken
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        for taken in "$@"; do [[ $p == "$taken" ]] && continue 2; done
        port_free "$p" && { echo "$p"; return 0; }
    done
    die "could not find a free port"
}

write_yaml() {
    local dir=$1 native_port=$2 storage_port=$3
    cat >"$dir/cassandra.yaml" <<EOF
# Generated by scripts/cassandra.sh for a throwaway single-node test cluster.
cluster_name: switchboard-test
# One token owned by this node: nothing to allocate or balance, faster first start.
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch

# Everything on loopback; the node is its own (only) seed.
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $storage_port
native_transport_port: $native_port
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$storage_port"

# All state lives under the test's directory.
data_file_directories:
  - $dir/data
commitlog_directory: $dir/commitlog
saved_caches_directory: $dir/saved_caches
hints_directory: $dir/hints
cdc_raw_directory: $dir/cdc_raw

authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer

# Periodic sync: writes never wait for an fsync; durability does not matter here.
commitlog_sync: periodic
commitlog_sync_period: 10000ms
# Small segments: less to preallocate and to replay. Max mutation size becomes 4 MiB.
commitlog_segment_size: 8MiB

# No snapshots on DROP/TRUNCATE (tests drop and truncate a lot), no hints (one node).
auto_snapshot: false
hinted_handoff_enabled: false

# Small memory footprint: the JVM heap is 1 GiB at most and the box has 2 cores.
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 16MiB
counter_cache_size: 0MiB
file_cache_size: 64MiB
concurrent_compactors: 1
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8

# Generous timeouts: a busy 2-core CI box should give slow answers, not timeouts.
read_request_timeout: 10000ms
range_request_timeout: 20000ms
write_request_timeout: 10000ms
counter_write_request_timeout: 10000ms
truncate_request_timeout: 60000ms
request_timeout: 20000ms
EOF
}

write_logback() {
    local dir=$1
    # All logging goes to DIR/system.log; nothing to the console.
    cat >"$dir/logback.xml" <<EOF
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$dir/system.log</file>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="FILE"/>
  </root>
</configuration>
EOF
}

# JVM flags. Cassandra's own launcher would assemble these from jvm-server.options,
# jvm17-server.options and cassandra-env.sh; here they are spelled out for a test node.
jvm_flags() {
    local dir=$1 jamm
    local jamms=("$LIB_DIR"/jamm-*.jar)
    jamm=${jamms[0]}
    [[ -f $jamm ]] || die "no jamm jar in $LIB_DIR"
    JVM_FLAGS=(
        # Bounded heap; Cassandra would otherwise size it from the machine's RAM.
        -Xms512m "-Xmx$HEAP_MAX"
        -XX:+UseG1GC -XX:MaxGCPauseMillis=300
        # Die on OOM instead of limping on; a test then fails loudly, not by timeouts.
        -XX:+ExitOnOutOfMemoryError
        # Cassandra runs many threads with shallow stacks.
        -Xss256k
        # No hsperfdata file in /tmp and no mmap pauses from it.
        -XX:+PerfDisableSharedMem
        -Djava.net.preferIPv4Stack=true
        # jamm measures object sizes for memtable accounting; it must be loaded as an agent.
        "-javaagent:$jamm"
        # JDK 17 module system: Cassandra (and jamm, netty, chronicle) reach into JDK
        # internals; without these it fails at startup with InaccessibleObjectException.
        -Djdk.attach.allowAttachSelf=true
        --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
        --add-exports java.base/java.lang.ref=ALL-UNNAMED
        --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
        --add-exports java.sql/java.sql=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
        --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
        --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
        --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
        --add-opens java.base/java.lang=ALL-UNNAMED
        --add-opens java.base/java.lang.module=ALL-UNNAMED
        --add-opens java.base/java.lang.reflect=ALL-UNNAMED
        --add-opens java.base/java.io=ALL-UNNAMED
        --add-opens java.base/java.util=ALL-UNNAMED
        --add-opens java.base/sun.nio.ch=ALL-UNNAMED
        --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
        --add-opens java.base/jdk.internal.math=ALL-UNNAMED
        --add-opens java.base/jdk.internal.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
        --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
        --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
        --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
        --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
        # Netty may use Unsafe for direct buffers on JDK 9+ only with this set.
        -Dio.netty.tryReflectionSetAccessible=true
        # Chronicle (audit/full query log libs) would otherwise try to phone home.
        -Dchronicle.analytics.disable=true
        -Dchronicle.announcer.disable=true

        # Cassandra itself.
        "-Dcassandra.config=file://$dir/cassandra.yaml"
        "-Dcassandra.storagedir=$dir"
        "-Dcassandra.logdir=$dir"
        "-Dlogback.configurationFile=file://$dir/logback.xml"
        # Stay attached to our stdout/stderr (redirected to DIR/stdout.log) rather than
        # closing them as a daemon would.
        -Dcassandra-foreground=yes
        # Single node: no peers to wait for, so skip the gossip settle wait and shrink
        # RING_DELAY (default 30 s). Measured on 5.0.8, a fresh single seed node starts in
        # ~4 s with or without these; they are insurance against the paths that do wait.
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        -Dcassandra.ring_delay_ms=1000
        # Do not fsync system tables: a test node's durability does not matter and the
        # schema/system writes at first start dominate start time otherwise.
        -Dcassandra.unsafesystem=true
        # Faster stop: do not sleep 2 s after announcing shutdown to (non-existent) peers,
        # and do not wait 2 s for inter-node messaging to quiesce.
        -Dcassandra.shutdown_announce_in_ms=0
        -Dcassandra.test.messagingService.nonGracefulShutdown=true
    )
    # Extra JVM flags from the caller, split on whitespace (e.g. GC logging while debugging).
    if [[ -n ${SWITCHBOARD_CASSANDRA_JVM_OPTS:-} ]]; then
        local extra
        read -r -a extra <<<"$SWITCHBOARD_CASSANDRA_JVM_OPTS"
        JVM_FLAGS+=("${extra[@]}")
    fi
    if [[ -n ${JMX_PORT:-} ]]; then
        # Local-only JMX: Cassandra binds it to the loopback address and needs no auth.
        JVM_FLAGS+=("-Dcassandra.jmx.local.port=$JMX_PORT" -Dcom.sun.management.jmxremote.authenticate=false)
    fi
}

# Last log lines for a failed start, cut to a sane width (Cassandra logs its whole config
# and classpath on one line each).
show_log_tail() {
    local f
    for f in "$1/system.log" "$1/stdout.log"; do
        [[ -s $f ]] || continue
        echo "==> $f <==" >&2
        tail -n 30 "$f" | cut -c1-300 >&2
    done
}

# Running = exists and is not a zombie (an exited JVM whose parent has not reaped it yet
# still answers kill -0).
pid_alive() {
    [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat=$(<"/proc/$1/stat") 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# Is PID $1 the Cassandra we started in DIR $2? Guards against a recycled PID.
pid_is_ours() {
    local cmdline
    pid_alive "$1" || return 1
    cmdline=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    grep -qxF -- "-Dcassandra.storagedir=$2" <<<"$cmdline" &&
        grep -qxF org.apache.cassandra.service.CassandraDaemon <<<"$cmdline"
}

# One real CQL round trip through the Python driver. Exit 0 = ready, 1 = not yet,
# 4 = driver unusable (then the caller falls back to the log line).
cql_probe() {
    local py=$1 port=$2
    "$py" - "$port" <<'EOF' 2>/dev/null
import sys
try:
    from cassandra.cluster import Cluster
except Exception:
    sys.exit(4)
try:
    cluster = Cluster(["127.0.0.1"], port=int(sys.argv[1]), connect_timeout=5,
                      control_connection_timeout=5, protocol_version=5)
    session = cluster.connect()
    row = session.execute("SELECT release_version FROM system.local", timeout=10).one()
    cluster.shutdown()
    print(row.release_version)
except Exception:
    sys.exit(1)
EOF
}

do_start() {
    local dir=$1 port=$2
    if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then die "bad port: $port"; fi
    need_java17
    do_fetch

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ -f $dir/cassandra.pid ]] && pid_is_ours "$(<"$dir/cassandra.pid")" "$dir"; then
        die "a Cassandra is already running from $dir (pid $(<"$dir/cassandra.pid")); stop it first"
    fi
    port_free "$port" || die "port $port on 127.0.0.1 is already in use"

    local storage_port t0 pid py ready_via="" version=""
    storage_port=$(pick_port "$port")
    JMX_PORT=""
    rm -f "$dir/jmx.port"
    if [[ ${SWITCHBOARD_CASSANDRA_JMX:-0} == 1 ]]; then
        JMX_PORT=$(pick_port "$port" "$storage_port")
        echo "$JMX_PORT" >"$dir/jmx.port"
    fi
    mkdir -p "$dir"/{data,commitlog,saved_caches,hints,cdc_raw}
    write_yaml "$dir" "$port" "$storage_port"
    write_logback "$dir"
    jvm_flags "$dir"

    # Cassandra calls mlockall() at start-up. It only refuses root in bin/cassandra, which
    # we do not use, but as root (CAP_IPC_LOCK ignores RLIMIT_MEMLOCK) mlockall succeeds and
    # pins the whole JVM mapping in RAM (~1 GiB resident at once, 3.5 GiB locked VM seen).
    # A test node must not do that, so make mlockall fail (Cassandra logs a warning and
    # carries on): lower the memlock limit, and as root also drop CAP_IPC_LOCK.
    local launcher=()
    if ((EUID == 0)); then
        if command -v setpriv >/dev/null 2>&1 &&
            setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock true 2>/dev/null; then
            launcher=(setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock)
        else
            echo "cassandra.sh: warning: cannot drop CAP_IPC_LOCK (no usable setpriv); Cassandra will mlock its memory" >&2
        fi
    fi

    t0=$(now)
    (
        ulimit -l 64 2>/dev/null || true
        exec "${launcher[@]}" "$JAVA" "${JVM_FLAGS[@]}" -cp "$LIB_DIR/*" \
            org.apache.cassandra.service.CassandraDaemon
    ) </dev/null >"$dir/stdout.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/cassandra.pid"

    py=$(find_python)
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! pid_alive "$pid"; then
            echo "cassandra.sh: Cassandra exited during start-up; last log lines:" >&2
            show_log_tail "$dir"
            rm -f "$dir/cassandra.pid"
            exit 1
        fi
        # Cheap check first: is anything accepting on the CQL port yet?
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            local rc=4
            if [[ -n $py ]]; then
                rc=0; version=$(cql_probe "$py" "$port") || rc=$?
            fi
            if ((rc == 0)); then
                ready_via="CQL query"; break
            elif ((rc == 4)) && grep -q "Starting listening for CQL clients" "$dir/system.log" 2>/dev/null; then
                # No usable driver: the port is open and Cassandra says it is serving.
                ready_via="log line (no cassandra-driver)"; break
            fi
        fi
        sleep 0.5
    done
    if [[ -z $ready_via ]]; then
        echo "cassandra.sh: Cassandra not ready on 127.0.0.1:$port after ${START_TIMEOUT}s; last log lines:" >&2
        show_log_tail "$dir"
        do_stop "$dir" >&2 || true
        exit 1
    fi
    echo "cassandra.sh: Cassandra ${version:-$RESOLVED_VERSION} ready on 127.0.0.1:$port (pid $pid, storage port $storage_port${JMX_PORT:+, jmx $JMX_PORT}) in $(elapsed_since "$t0")s, checked by $ready_via"
}

# ---------------------------------------------------------------------------------------
# stop

do_stop() {
    local dir=$1 pid
    [[ -d $dir ]] || die "no such directory: $dir"
    dir=$(cd "$dir" && pwd)
    if [[ ! -f $dir/cassandra.pid ]]; then
        echo "cassandra.sh: no cassandra.pid in $dir, nothing to stop"
        return 0
    fi
    pid=$(<"$dir/cassandra.pid")
    if ! pid_is_ours "$pid" "$dir"; then
        echo "cassandra.sh: pid $pid is not running (or is not this Cassandra), nothing to stop"
        rm -f "$dir/cassandra.pid"
        return 0
    fi
    # TERM runs Cassandra's shutdown hook (drains, flushes); give it ~20 s, then KILL.
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
        pid_alive "$pid" || break
        sleep 0.5
    done
    if pid_alive "$pid"; then
        echo "cassandra.sh: pid $pid ignored TERM for 20 s, sending KILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do
            pid_alive "$pid" || break
            sleep 0.5
        done
    fi
    pid_alive "$pid" && die "pid $pid still alive after KILL"
    rm -f "$dir/cassandra.pid"
    echo "cassandra.sh: stopped Cassandra (pid $pid)"
}

# ---------------------------------------------------------------------------------------

cmd=${1:-}
case $cmd in
    fetch)
        [[ $# == 1 ]] || usage
        do_fetch
        echo "cassandra.sh: cassandra-all $RESOLVED_VERSION in $LIB_DIR"
        ;;
    start)
        [[ $# == 3 ]] || usage
        do_start "$2" "$3"
        ;;
    stop)
        [[ $# == 2 ]] || usage
        do_stop "$2"
        ;;
    *) usage ;;
esac
