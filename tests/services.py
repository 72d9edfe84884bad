"""Addresses of the real servers the test command started (scripts/test exports them)."""

from __future__ import annotations

import os

import pytest

# kind -> environment variable holding its address
SERVICES = {
    "redis": "SWITCHBOARD_TEST_REDIS_URL",
    "redis-cluster": "SWITCHBOARD_TEST_REDIS_CLUSTER_URL",
    "postgres": "SWITCHBOARD_TEST_DATABASE_URL",
    "cassandra": "SWITCHBOARD_TEST_CASSANDRA_HOSTS",
    "nginx": "SWITCHBOARD_TEST_NGINX_BIN",
    "chromium": "SWITCHBOARD_TEST_CHROMIUM",
}


def require_service(kind: str) -> str:
    """The service's address; skip (or fail, in the full run) when it is not running."""
    value = os.environ.get(SERVICES[kind], "")
    if value:
        return value
    # The test command sets a reason when a service cannot run on this machine at all
    # (no Java for Cassandra): that skips even in the full run.
    reason = os.environ.get(SERVICES[kind] + "_SKIP_REASON")
    if reason:
        pytest.skip(reason)
    why = f"{kind} is not running ({SERVICES[kind]} unset; `bash scripts/test` starts it)"
    if os.environ.get("SWITCHBOARD_REQUIRE_SERVICES") == "1":
        pytest.fail(why)
    pytest.skip(why)
