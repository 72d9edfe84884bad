"""HistoryStore on Cassandra (cassandra-driver), the scaled engine for chat history.

Schema and its reasons: storage/cassandra_schema.py (create it with
``python -m storage.cassandra_schema`` before starting gateways or workers).

Ordering. Rows are clustered by message id, but the contract orders by ``seq``. We rely
on id order == seq order within a conversation: the gateway assigns seq and id together
under the conversation's lock, seq from an atomic counter and the id from a time-sortable
Snowflake generator, so a later seq gets a later id as long as the ids of one
conversation come from clocks that do not step back across nodes (IdGenerator never
steps back within a process). Pages are therefore read by id and returned as stored.

Process model: storage/cassandra_session.py (a session per process, created on first
use after gunicorn's fork; statements prepared once per session).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from cassandra import InvalidRequest
from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from storage.cassandra_schema import SchemaError, quote_keyspace, recorded_bucket_ms
from storage.cassandra_session import LazySession, run_concurrently
from storage.history import HistoryStore, InboxEntry, Message, Watermark
from storage.ids import id_time_ms

DAY_MS = 24 * 3600 * 1000
MAX_ID = (1 << 63) - 1
# An unlogged batch is one mutation when all its rows share a partition; Cassandra warns
# above batch_size_warn_threshold (5 KiB) and refuses above the fail threshold (50 KiB),
# so batches are cut well below the latter. 50 rows bounds one request's latency.
BATCH_MAX_ROWS = 50
BATCH_MAX_BYTES = 32 * 1024
# Bucket index rows this process has already written (they are never deleted, so the
# write need not be repeated): saves a request per partition per store() call, a third
# of all requests when a persist batch spans many conversations. Bounded: cleared when
# full, which only costs repeating some idempotent writes.
KNOWN_BUCKETS_MAX = 100_000

_MESSAGE_COLUMNS = ("conversation_id, message_id, seq, sender_id, client_msg_id, text, "
                    "created_at")


class _Statements:
    """Every statement the store runs, prepared once per session."""

    def __init__(self, session: Session, ks: str) -> None:
        def p(cql: str) -> PreparedStatement:
            return session.prepare(cql.format(ks=ks, cols=_MESSAGE_COLUMNS))

        # Writes carry USING TIMESTAMP from the message id: a retried write is then
        # byte-identical to the first (same cells, same timestamps), and a later edit,
        # written with a real clock, always wins over a late retry of the original.
        self.insert_message = p(
            "INSERT INTO {ks}.messages (conversation_id, bucket, message_id, seq, "
            "sender_id, client_msg_id, text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "USING TIMESTAMP ?")
        self.insert_bucket = p(
            "INSERT INTO {ks}.conversation_buckets (conversation_id, bucket) VALUES (?, ?)")
        self.get = p("SELECT {cols} FROM {ks}.messages WHERE conversation_id = ? "
                     "AND bucket = ? AND message_id = ?")
        self.buckets_down = p("SELECT bucket FROM {ks}.conversation_buckets "
                              "WHERE conversation_id = ? AND bucket <= ?")
        self.buckets_up = p("SELECT bucket FROM {ks}.conversation_buckets "
                            "WHERE conversation_id = ? AND bucket >= ? ORDER BY bucket ASC")
        self.older = p("SELECT {cols} FROM {ks}.messages WHERE conversation_id = ? "
                       "AND bucket = ? AND message_id < ? LIMIT ?")
        self.older_or_same = p("SELECT {cols} FROM {ks}.messages WHERE conversation_id = ? "
                               "AND bucket = ? AND message_id <= ? LIMIT ?")
        self.newer = p("SELECT {cols} FROM {ks}.messages WHERE conversation_id = ? "
                       "AND bucket = ? AND message_id > ? ORDER BY message_id ASC LIMIT ?")
        # The write timestamp is the seq: Cassandra keeps the cell with the highest
        # timestamp, so the furthest mark wins whatever order writes arrive in.
        self.mark_write = p("UPDATE {ks}.read_marks USING TIMESTAMP ? SET seq = ?, "
                            "message_id = ?, updated_at = ? WHERE conversation_id = ? "
                            "AND user_id = ?")
        self.marks = p("SELECT conversation_id, user_id, seq, message_id, updated_at "
                       "FROM {ks}.read_marks WHERE conversation_id = ?")
        self.marks_of = p("SELECT conversation_id, user_id, seq, message_id, updated_at "
                          "FROM {ks}.read_marks WHERE conversation_id = ? AND user_id IN ?")
        self.insert_inbox = p("INSERT INTO {ks}.inbox (user_id, bucket, message_id, "
                              "conversation_id, seq) VALUES (?, ?, ?, ?, ?)")
        self.insert_inbox_bucket = p(
            "INSERT INTO {ks}.inbox_buckets (user_id, bucket) VALUES (?, ?)")
        self.inbox_buckets_up = p("SELECT bucket FROM {ks}.inbox_buckets "
                                  "WHERE user_id = ? AND bucket >= ?")
        self.inbox_after = p("SELECT message_id, conversation_id, seq FROM {ks}.inbox "
                             "WHERE user_id = ? AND bucket = ? AND message_id > ? LIMIT ?")


def _message(row: Any) -> Message:
    return Message(id=row.message_id, conversation_id=row.conversation_id, seq=row.seq,
                   sender_id=row.sender_id, client_msg_id=row.client_msg_id, text=row.text,
                   created_at=row.created_at)


def _watermark(row: Any) -> Watermark:
    return Watermark(row.conversation_id, row.user_id, row.seq, row.message_id,
                     row.updated_at)


def _batches(rows: list[tuple], texts: list[int]) -> Iterable[list[tuple]]:
    """Cut one partition's rows into batches under BATCH_MAX_ROWS and BATCH_MAX_BYTES."""
    chunk: list[tuple] = []
    size = 0
    for row, length in zip(rows, texts, strict=True):
        if chunk and (len(chunk) >= BATCH_MAX_ROWS or size + length > BATCH_MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += length + 64  # keys and the other columns
    if chunk:
        yield chunk


def _partition_work(statement: PreparedStatement, rows: list[tuple],
                    sizes: list[int] | None = None) -> list[tuple[Any, Any]]:
    """One partition's rows as requests: a lone row as itself, more as unlogged batches.

    Unlogged and single-partition: one mutation on one replica set, no batch log, and
    one request instead of one per row. A multi-partition batch would only add
    coordinator work, so callers group rows by partition first.
    """
    if len(rows) == 1:
        return [(statement, rows[0])]
    work: list[tuple[Any, Any]] = []
    for chunk in _batches(rows, sizes or [0] * len(rows)):
        if len(chunk) == 1:
            work.append((statement, chunk[0]))
            continue
        batch = BatchStatement(BatchType.UNLOGGED)
        for row in chunk:
            batch.add(statement, row)
        work.append((batch, None))
    return work


class CassandraHistoryStore(HistoryStore):
    def __init__(self, hosts: str | Sequence[str], *, port: int = 9042,
                 keyspace: str = "switchboard", consistency: str = "LOCAL_QUORUM",
                 local_dc: str = "", bucket_ms: int = 10 * DAY_MS,
                 request_timeout: float = 10.0) -> None:
        self.keyspace = quote_keyspace(keyspace)
        if bucket_ms <= 0:
            raise ValueError("bucket_ms must be positive")
        self.bucket_ms = bucket_ms
        # Connects lazily, in each process after gunicorn's fork (see cassandra_session).
        self._db = LazySession(hosts, self._setup, port=port, consistency=consistency,
                               local_dc=local_dc, request_timeout=request_timeout)
        self._known_buckets: set[tuple[str, int, int]] = set()

    @classmethod
    def from_settings(cls, settings: Any) -> CassandraHistoryStore:
        return cls(settings.cassandra_hosts, port=settings.cassandra_port,
                   keyspace=settings.cassandra_keyspace,
                   consistency=settings.cassandra_consistency,
                   local_dc=settings.cassandra_local_dc,
                   bucket_ms=settings.history_bucket_days * DAY_MS)

    def bucket_of(self, message_id: int) -> int:
        return id_time_ms(message_id) // self.bucket_ms

    def _ready(self) -> tuple[Session, _Statements]:
        return self._db.prepared()

    def _setup(self, session: Session) -> _Statements:
        """Per session: check the keyspace matches this store, then prepare statements."""
        try:
            recorded = recorded_bucket_ms(session, self.keyspace)
        except InvalidRequest as exc:
            raise SchemaError(f"keyspace {self.keyspace} has no history schema; run "
                              "`python -m storage.cassandra_schema`") from exc
        if recorded != self.bucket_ms:
            raise SchemaError(f"keyspace {self.keyspace} uses buckets of {recorded} ms, "
                              f"this store was configured with {self.bucket_ms} ms")
        return _Statements(session, self.keyspace)

    def admin_session(self) -> Session:
        """A session with no schema expectations (the schema command uses it)."""
        return self._db.session()

    def close(self) -> None:
        self._db.close()

    # --- messages -------------------------------------------------------------------

    def store(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        session, st = self._ready()
        partitions: dict[tuple[int, int], list[Message]] = defaultdict(list)
        for m in messages:
            partitions[(m.conversation_id, self.bucket_of(m.id))].append(m)
        # The bucket index first: a crash between the two steps leaves an empty bucket,
        # which readers skip; the other order would hide stored messages from paging
        # until the persist job's retry.
        self._index_buckets(session, st.insert_bucket, "conversation", list(partitions))
        work: list[tuple[Any, Any]] = []
        for (conversation_id, bucket), group in partitions.items():
            rows = [(conversation_id, bucket, m.id, m.seq, m.sender_id, m.client_msg_id,
                     m.text, m.created_at, id_time_ms(m.id) * 1000) for m in group]
            work.extend(_partition_work(st.insert_message, rows,
                                        [len(m.text.encode()) for m in group]))
        run_concurrently(session, work)

    def _index_buckets(self, session: Session, statement: PreparedStatement, kind: str,
                       keys: list[tuple[int, int]]) -> None:
        """Write the (owner, bucket) index rows this process has not written yet."""
        new = [key for key in keys if (kind, *key) not in self._known_buckets]
        run_concurrently(session, [(statement, key) for key in new])
        if len(self._known_buckets) + len(new) > KNOWN_BUCKETS_MAX:
            self._known_buckets.clear()
        self._known_buckets.update((kind, *key) for key in new)

    def get(self, conversation_id: int, message_id: int) -> Message | None:
        session, st = self._ready()
        row = session.execute(st.get, (conversation_id, self.bucket_of(message_id),
                                       message_id)).one()
        return _message(row) if row else None

    def _walk(self, conversation_id: int, *, older: bool, bound: int, inclusive: bool,
              limit: int) -> list[Any]:
        """Up to ``limit`` rows past ``bound`` (older or newer), nearest first.

        Visits only buckets listed in conversation_buckets, from the bound's bucket on.
        """
        session, st = self._ready()
        start = self.bucket_of(min(bound, MAX_ID))
        buckets = session.execute(st.buckets_down if older else st.buckets_up,
                                  (conversation_id, start))
        if older:
            query = st.older_or_same if inclusive else st.older
        else:
            query = st.newer
        rows: list[Any] = []
        for bucket_row in buckets:
            need = limit - len(rows)
            if need <= 0:
                break
            rows.extend(session.execute(query, (conversation_id, bucket_row.bucket,
                                                bound, need)))
        return rows

    def page(self, conversation_id: int, *, before: int | None = None,
             after: int | None = None, around: int | None = None,
             limit: int = 50) -> list[Message]:
        if limit <= 0:
            return []
        anchor = before if before is not None else after if after is not None else around
        if anchor is None:
            rows = self._walk(conversation_id, older=True, bound=MAX_ID, inclusive=False,
                              limit=limit)
            return [_message(r) for r in reversed(rows)]
        if self.get(conversation_id, anchor) is None:
            raise KeyError(anchor)
        if before is not None:
            rows = self._walk(conversation_id, older=True, bound=anchor, inclusive=False,
                              limit=limit)
            return [_message(r) for r in reversed(rows)]
        if after is not None:
            rows = self._walk(conversation_id, older=False, bound=anchor, inclusive=False,
                              limit=limit)
            return [_message(r) for r in rows]
        # around: the anchor and the older half (rounded up), then fill with newer ones.
        older = self._walk(conversation_id, older=True, bound=anchor, inclusive=True,
                           limit=limit - (limit - 1) // 2)
        newer = self._walk(conversation_id, older=False, bound=anchor, inclusive=False,
                           limit=limit - len(older))
        return [_message(r) for r in [*reversed(older), *newer]]

    def last_seq(self, conversation_id: int) -> int:
        # The newest message has the highest seq (see "Ordering" above), so no counter
        # table: a counter could not be written idempotently by retried persist jobs.
        latest = self.latest(conversation_id)
        return latest.seq if latest else 0

    # --- read marks -----------------------------------------------------------------

    def set_watermark(self, mark: Watermark) -> Watermark:
        """Write with the seq as the write timestamp, then read the mark in force.

        Cassandra resolves concurrent writes to a cell by their timestamps, so writing
        every mark at timestamp = seq makes the highest seq win on every replica, in any
        arrival order, with a plain write: two devices racing (both read 5; one writes 9,
        the other 7) end at 9. A lightweight transaction would cost a Paxos round per
        move. Every write to read_marks must use this rule, or the guarantee is void.
        """
        self.set_watermarks([mark])
        session, st = self._ready()
        current = session.execute(st.marks_of, (mark.conversation_id, [mark.user_id])).one()
        return _watermark(current) if current is not None else mark

    def set_watermarks(self, marks: Sequence[Watermark]) -> None:
        session, st = self._ready()
        by_conversation: dict[int, list[tuple]] = defaultdict(list)
        for m in marks:
            by_conversation[m.conversation_id].append(
                (m.seq, m.seq, m.message_id, m.updated_at, m.conversation_id, m.user_id))
        run_concurrently(session, [item for rows in by_conversation.values()
                                   for item in _partition_work(st.mark_write, rows)])

    def watermarks(self, conversation_id: int,
                   user_ids: Iterable[int] | None = None) -> dict[int, Watermark]:
        session, st = self._ready()
        if user_ids is None:
            rows = session.execute(st.marks, (conversation_id,))
        else:
            wanted = sorted(set(user_ids))
            if not wanted:
                return {}
            rows = session.execute(st.marks_of, (conversation_id, wanted))
        return {r.user_id: _watermark(r) for r in rows}

    # --- inbox ----------------------------------------------------------------------

    def inbox_append(self, user_ids: Iterable[int], message: Message) -> None:
        session, st = self._ready()
        users = sorted(set(user_ids))
        bucket = self.bucket_of(message.id)
        # As in store(): the bucket index before the entries it points at.
        self._index_buckets(session, st.insert_inbox_bucket, "inbox",
                            [(u, bucket) for u in users])
        run_concurrently(session, [(st.insert_inbox, (u, bucket, message.id,
                                                   message.conversation_id, message.seq))
                                for u in users])

    def inbox_append_many(self, entries: Sequence[tuple[Sequence[int], Message]]) -> None:
        session, st = self._ready()
        partitions: dict[tuple[int, int], list[tuple]] = defaultdict(list)
        for users, m in entries:
            bucket = self.bucket_of(m.id)
            for u in sorted(set(users)):
                partitions[(u, bucket)].append((u, bucket, m.id, m.conversation_id, m.seq))
        self._index_buckets(session, st.insert_inbox_bucket, "inbox", sorted(partitions))
        run_concurrently(session, [item for rows in partitions.values()
                                   for item in _partition_work(st.insert_inbox, rows)])

    def inbox_page(self, user_id: int, after_message_id: int | None = None,
                   limit: int = 100) -> list[InboxEntry]:
        if limit <= 0:
            return []
        session, st = self._ready()
        after = -1 if after_message_id is None else after_message_id
        start = 0 if after_message_id is None else self.bucket_of(after_message_id)
        entries: list[InboxEntry] = []
        for bucket_row in session.execute(st.inbox_buckets_up, (user_id, start)):
            need = limit - len(entries)
            if need <= 0:
                break
            entries.extend(InboxEntry(r.message_id, r.conversation_id, r.seq)
                           for r in session.execute(st.inbox_after, (
                               user_id, bucket_row.bucket, after, need)))
        return entries
