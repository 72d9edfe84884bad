"""Switchboard settings: typed defaults, overridden by ``SWITCHBOARD_*`` environment variables.

Every field of :class:`Settings` can be set from the environment by upper-casing its name
and adding the prefix, e.g. ``database_url`` -> ``SWITCHBOARD_DATABASE_URL``. Unset
engine URLs mean the embedded engine (memory delivery log, SQLite, in-process jobs).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "SWITCHBOARD_"


@dataclasses.dataclass(frozen=True)
class Settings:
    # --- where state lives -------------------------------------------------------------
    # Directory for the embedded engine's files (SQLite database, generated secret key).
    data_dir: str = "./var"
    # SQLAlchemy URL for users, friends, conversations. Empty: SQLite in data_dir.
    database_url: str = ""
    # SQLAlchemy URL for chat history when Cassandra is not configured. Empty: same as
    # database_url.
    history_url: str = ""
    # Redis for the delivery log, presence and jobs. Empty: the in-process memory engine.
    redis_url: str = ""
    # Key prefix for everything Switchboard writes to Redis, so several deployments (or
    # test runs) can share one server.
    redis_prefix: str = "sb"
    # Connections per Redis node per process. Greenlets hold a connection only for one
    # round trip (no blocking commands: pub/sub is the doorbell), and the send path's
    # scripts go batched on one connection of their own, so a few dozen serve
    # thousands of greenlets; redis-py's default of 100 per node times N workers times
    # M nodes would exhaust maxclients long before it helped.
    redis_pool_size: int = 50
    # How long a greenlet waits for a free pooled connection before failing its request:
    # an exhausted pool must shed load, not queue requests forever.
    redis_pool_timeout: float = 2.0
    # Every command is a short O(log n) call, so a reply slower than this means Redis is
    # stalled or gone: fail the request rather than park the greenlet for redis-py's 5 s.
    redis_socket_timeout: float = 2.0
    # Connecting to a live Redis on the LAN takes milliseconds; a second means it is down.
    redis_connect_timeout: float = 1.0
    # PING a pooled connection idle longer than this before using it, and the pub/sub
    # subscriber pings at this interval: finds connections silently dropped by NATs,
    # firewalls or a restarted server well before a client notices.
    redis_health_check_interval: float = 10.0
    # Longest pause between reconnection attempts of the pub/sub subscriber (it backs off
    # exponentially from 0.1 s): short, because every live client waits on it.
    redis_reconnect_max_backoff: float = 5.0
    # Worker-id lease lifetime in seconds, renewed every third of it. A crashed worker's id
    # becomes reusable after this long; 1024 ids make churn of a few per minute harmless.
    redis_worker_lease_ttl: float = 30.0
    # Seconds a gateway process keeps its own copy of a member list or session read from
    # Redis. Every change is announced to all processes, which drop theirs at once, and
    # copies are dropped within ~3 s of the announcements' connection going silent, so
    # this is only a second bound on staleness. 0: read Redis every time.
    near_cache_ttl: float = 60.0
    # Online sets are split into this many hash-tagged keys so a Redis Cluster spreads
    # presence over its shards; each shard is swept by one atomic script.
    redis_presence_shards: int = 16
    # On a standalone Redis, a send is one atomic script, one round trip (see
    # storage/send_redis.py); off, it takes the two that a Cluster needs.
    one_trip_sends: bool = True
    # Standalone Redis for the RQ job queues. Empty: redis_url (which then must not be a
    # Cluster: RQ needs one server).
    rq_redis_url: str = ""
    # The persist stream is split by conversation into this many hash-tagged shards, so a
    # Redis Cluster spreads it and as many workers can drain in parallel.
    persist_shards: int = 4
    # Messages written to history per round trip by a worker: large enough to amortise
    # Cassandra latency, small enough that a killed worker redoes little.
    persist_batch: int = 500
    # A persist entry taken by a worker that then went silent this long (it died) is
    # claimed by another worker. Above the time one batch takes.
    persist_claim_idle: float = 10.0
    # Comma-separated Cassandra contact points for chat history. Empty: SQL history.
    cassandra_hosts: str = ""
    # CQL port of every contact point; an entry "host:port" in cassandra_hosts overrides it
    # (test nodes run on random ports).
    cassandra_port: int = 9042
    # One keyspace per deployment; tests create a throwaway one per test.
    cassandra_keyspace: str = "switchboard"
    # CQL replication map, used only when the schema command creates the keyspace. The
    # default suits one development node; production uses
    # "{'class': 'NetworkTopologyStrategy', '<dc>': 3}" so LOCAL_QUORUM survives a node loss.
    cassandra_replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    # Reads and writes. LOCAL_QUORUM with RF 3 means a read sees every acknowledged write
    # and one node per DC may be down, without waiting on other data centres.
    cassandra_consistency: str = "LOCAL_QUORUM"
    # Data centre the driver routes to. Empty: the DC of the first contact point reached.
    cassandra_local_dc: str = ""
    # Width of a history partition (messages and inbox). 10 days keeps a busy group's
    # partition in the tens of MB while a page of a quiet chat stays a single read;
    # fixed for a keyspace's life (the schema command records and enforces it).
    history_bucket_days: int = 10

    # --- security ----------------------------------------------------------------------
    # Signs access tokens and stream tickets. Empty: generated once and kept in data_dir.
    secret_key: str = ""
    token_ttl: int = 30 * 24 * 3600  # access tokens expire after 30 days
    ticket_ttl: int = 60  # stream tickets are single-use and short-lived
    # scrypt cost (N = 2**password_hash_log2n). 14 is ~50 ms here; tests lower it.
    password_hash_log2n: int = 14
    max_body_bytes: int = 1024 * 1024
    max_connections_per_user: int = 20
    send_rate_per_second: float = 20.0  # token bucket refill per user
    send_rate_burst: int = 60
    typing_interval: float = 2.0  # at most one typing event per user/conversation per this

    # --- chat limits -------------------------------------------------------------------
    max_text_length: int = 100_000
    max_group_members: int = 100
    max_title_length: int = 200
    history_page_limit: int = 100
    client_msg_id_ttl: int = 24 * 3600  # how long a retried send is recognised

    # --- event log and transports -----------------------------------------------------
    event_log_size: int = 1000  # events kept per user for resume (the hot window)
    event_log_ttl: int = 24 * 3600  # and no longer than this, in seconds
    longpoll_max_wait: float = 25.0  # below common 30-60 s proxy idle timeouts
    sse_heartbeat: float = 15.0  # comment line; keeps proxies from closing idle streams
    sse_retry_ms: int = 2000
    ws_ping_interval: float = 25.0
    events_page_limit: int = 500

    # --- presence ----------------------------------------------------------------------
    # Requests and live connections renew a user's presence at most this often: a third
    # of the timeout, so two renewals can be late before a live user looks offline.
    presence_heartbeat: float = 10.0
    presence_timeout: float = 30.0  # offline after this long without a heartbeat
    presence_sweep_interval: float = 1.0

    # --- push notifications ------------------------------------------------------------
    # One push per user per this many seconds: a burst of messages to an offline user
    # wakes their phone once, and the next push says how many arrived meanwhile.
    push_window: float = 10.0
    # A gateway process re-registers its live connections in the engine every third of
    # this; a process that dies without deregistering stops counting after it.
    push_connection_ttl: float = 30.0
    # A closed connection still counts as live this long: covers the gap between two
    # long-polls, a poll interval and a quick reconnect, so those users get no push.
    push_connection_linger: float = 10.0
    # Connect and read timeout of every request to a push provider or webhook.
    push_timeout: float = 5.0
    # Further attempts after a 5xx, 429, timeout or connection error, with doubling pauses
    # from push_retry_backoff seconds.
    push_retries: int = 3
    push_retry_backoff: float = 1.0  # first pause between attempts, doubled each time
    # Embedded mode: notification jobs run in this many greenlets; Redis mode: this many
    # greenlets hand jobs to RQ. Either way a slow provider holds only these, never a send.
    push_concurrency: int = 20
    # Notification jobs waiting for a free greenlet; beyond this they are dropped (logged).
    push_queue_size: int = 10000
    max_devices_per_user: int = 20  # push targets (browsers, webhooks) per user
    # Allow http:// and loopback/private-address push targets (tests, development).
    push_allow_insecure_targets: bool = False
    # VAPID "sub" claim: a mailto: or https: contact for push services (RFC 8292).
    push_vapid_subject: str = "mailto:push@switchboard.invalid"
    # VAPID private key (PEM). Empty: generated once and kept (data_dir, or Redis).
    push_vapid_private_key: str = ""
    # How long a push service keeps a Web Push message for a device that is offline.
    push_ttl: int = 24 * 3600
    # A notification job older than this (a backlog after an outage) is dropped: a phone
    # should not buzz for a message the user has likely read elsewhere by now.
    push_max_age: float = 300.0

    # --- server ------------------------------------------------------------------------
    require_gevent: bool = False  # wsgi.py sets True: refuse to serve unpatched
    # Base URL clients use to reach this node, published for discovery (GET
    # /v1/discover). Empty: http://<gunicorn bind address>, with this host's name in
    # place of a wildcard address.
    public_url: str = ""
    # A node missing from Redis this long drops out of discovery; each worker refreshes
    # its entry every third of it. Short enough that clients stop being sent to a dead
    # node quickly, long enough that a busy event loop or a Redis hiccup does not flap.
    discovery_ttl: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``SWITCHBOARD_*`` variables, then explicit overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _coerce(field, raw)
        values.update(overrides)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        return dataclasses.replace(self, **overrides)


def _coerce(field: dataclasses.Field, raw: str) -> Any:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "bool":
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(
            f"{ENV_PREFIX}{field.name.upper()}={raw!r} is not a valid {kind}"
        ) from None
    return raw


def env_names() -> list[str]:
    """Every environment variable Switchboard reads (the README lists them)."""
    return [ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)]
