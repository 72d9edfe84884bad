"""Start a throwaway Cassandra for local test runs (the test command may use it too).

    from tests.cassandra_server import start_cassandra
    node = start_cassandra()          # scripts/cassandra.sh start <tmpdir> <free port>
    os.environ["SWITCHBOARD_TEST_CASSANDRA_HOSTS"] = node.hosts
    ...
    node.stop()

or from a shell: ``.venv/bin/python -m tests.cassandra_server`` prints the export line,
and stops the node on Ctrl-C. When the machine cannot run Cassandra (no Java 17, no
Maven on a cold cache) ``CassandraUnavailable`` carries the script's one-line reason,
meant for SWITCHBOARD_TEST_CASSANDRA_HOSTS_SKIP_REASON.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.servers import free_port

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "cassandra.sh"
SKIP_EXIT = 3  # cassandra.sh: a prerequisite is missing


class CassandraUnavailable(RuntimeError):
    """This machine cannot run Cassandra; str(exc) says why."""


@dataclasses.dataclass
class CassandraNode:
    hosts: str  # "127.0.0.1:PORT", the SWITCHBOARD_TEST_CASSANDRA_HOSTS format
    directory: Path
    stop: Callable[[], None]


def start_cassandra(directory: Path | None = None, port: int | None = None,
                    timeout: float = 300.0) -> CassandraNode:
    """Start a node with all its state in ``directory`` (a new temp dir by default)."""
    owned = directory is None
    directory = Path(tempfile.mkdtemp(prefix="sbcass-")) if directory is None else directory
    # free_port() releases the port before Cassandra binds it; the script re-checks and
    # fails loudly on the (rare) collision rather than racing silently.
    port = port or free_port()
    proc = subprocess.run(["bash", str(SCRIPT), "start", str(directory), str(port)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode == SKIP_EXIT:
        raise CassandraUnavailable(proc.stdout.strip().removeprefix("cassandra.sh: SKIP: "))
    if proc.returncode != 0:
        raise RuntimeError(f"cassandra.sh start failed ({proc.returncode}):\n"
                           f"{proc.stdout}{proc.stderr}")

    def stop() -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], capture_output=True,
                       text=True, timeout=120, check=False)
        if owned:
            shutil.rmtree(directory, ignore_errors=True)

    return CassandraNode(f"127.0.0.1:{port}", directory, stop)


def main() -> int:
    try:
        node = start_cassandra()
    except CassandraUnavailable as exc:
        print(f"skip: {exc}", file=sys.stderr)
        return SKIP_EXIT
    print(f"export SWITCHBOARD_TEST_CASSANDRA_HOSTS={node.hosts}", flush=True)
    try:
        sys.stdin.read() if not sys.stdin.isatty() else input("Enter stops Cassandra\n")
    except (KeyboardInterrupt, EOFError):
        pass
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
