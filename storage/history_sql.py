"""HistoryStore on SQL (SQLite embedded, PostgreSQL in production) via SQLAlchemy Core.

It has its own engine, not the Flask session, so RQ workers can use it without an app.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from storage.db import create_tables, engine_options
from storage.history import HistoryStore, InboxEntry, Message, Watermark

metadata = MetaData()

messages = Table(
    "messages", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("conversation_id", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("sender_id", BigInteger, nullable=False),
    Column("client_msg_id", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("conversation_id", "seq", name="uq_messages_conv_seq"),
    UniqueConstraint("sender_id", "client_msg_id", name="uq_messages_sender_cmid"),
)

read_marks = Table(
    "read_marks", metadata,
    Column("conversation_id", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("message_id", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_read_marks_user", read_marks.c.user_id)

# Per-user message references, in message id order (the Cassandra inbox's mirror).
inbox = Table(
    "inbox", metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("message_id", BigInteger, primary_key=True, autoincrement=False),
    Column("conversation_id", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
)


def _message_row(m: Message) -> dict[str, Any]:
    return {"id": m.id, "conversation_id": m.conversation_id, "seq": m.seq,
            "sender_id": m.sender_id, "client_msg_id": m.client_msg_id, "text": m.text,
            "created_at": m.created_at}


def _row_message(row: Any) -> Message:
    return Message(id=row.id, conversation_id=row.conversation_id, seq=row.seq,
                   sender_id=row.sender_id, client_msg_id=row.client_msg_id,
                   text=row.text, created_at=row.created_at)


def _inbox_rows(user_ids: Iterable[int], m: Message) -> list[dict[str, Any]]:
    return [{"user_id": u, "message_id": m.id, "conversation_id": m.conversation_id,
             "seq": m.seq} for u in sorted(set(user_ids))]


def _json_insert(table: Table, conflict: str) -> str:
    """PostgreSQL: insert a batch given as one JSON array of rows, one statement.

    A drain's batch written row by row (executemany) cost the worker a Bind/Execute
    per row and PostgreSQL as many executions; as one parameter it is one of each,
    whatever the batch's size, and always the same statement text (prepared once).
    JSON rather than an array per column: psycopg builds array literals in Python
    (~15 % of the worker's samples), ``json.dumps`` in C.
    """
    columns = ", ".join(c.name for c in table.c)
    types = ", ".join(f"{c.name} {'bigint' if isinstance(c.type, BigInteger) else 'text'}"
                      for c in table.c)
    return (f"INSERT INTO {table.name} ({columns}) SELECT {columns} "
            f"FROM json_to_recordset(%s::json) AS r({types}) {conflict}")


# Each table's conflict rule, as the SQLAlchemy statements in SqlHistoryStore state it.
_PG_WRITES = {
    messages.name: _json_insert(messages, "ON CONFLICT (id) DO NOTHING"),
    # Only a higher seq replaces the stored mark: watermarks never move back.
    read_marks.name: _json_insert(read_marks, (
        "ON CONFLICT (conversation_id, user_id) DO UPDATE SET seq = excluded.seq, "
        "message_id = excluded.message_id, updated_at = excluded.updated_at "
        "WHERE read_marks.seq < excluded.seq")),
    inbox.name: _json_insert(inbox, "ON CONFLICT (user_id, message_id) DO NOTHING"),
}


def _furthest(marks: Iterable[Watermark]) -> list[Watermark]:
    """The furthest mark per (conversation, member): one multi-row upsert may not touch
    a row twice."""
    furthest: dict[tuple[int, int], Watermark] = {}
    for m in marks:
        key = (m.conversation_id, m.user_id)
        if key not in furthest or furthest[key].seq < m.seq:
            furthest[key] = m
    return list(furthest.values())


class SqlHistoryStore(HistoryStore):
    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.engine = engine or create_engine(url, **engine_options(url))
        create_tables(self.engine, metadata)
        dialect = self.engine.dialect.name
        self._insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        # Write statements are built once: building an upsert (its `excluded` proxies)
        # cost more than running it on the embedded send path.
        self._store_stmt = self._insert(messages).on_conflict_do_nothing(index_elements=["id"])
        upsert = self._insert(read_marks)
        # Only a higher seq replaces the stored mark: watermarks never move back.
        self._mark_stmt = upsert.on_conflict_do_update(
            index_elements=["conversation_id", "user_id"],
            set_={k: upsert.excluded[k] for k in ("seq", "message_id", "updated_at")},
            where=read_marks.c.seq < upsert.excluded.seq)
        self._inbox_stmt = self._insert(inbox).on_conflict_do_nothing(
            index_elements=["user_id", "message_id"])
        self._stmts = {messages.name: self._store_stmt, read_marks.name: self._mark_stmt,
                       inbox.name: self._inbox_stmt}
        self._one_statement = dialect == "postgresql"

    # --- writes, inside a caller's transaction ------------------------------------------
    def _write(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """``rows`` into ``table`` under its conflict rule; on PostgreSQL as one JSON
        parameter (see _json_insert)."""
        if not rows:
            return
        if self._one_statement:
            conn.exec_driver_sql(_PG_WRITES[table.name],
                                 (json.dumps(rows, ensure_ascii=False),))
        else:
            conn.execute(self._stmts[table.name], rows)

    def _write_messages(self, conn: Connection, batch: Sequence[Message]) -> None:
        self._write(conn, messages, [_message_row(m) for m in batch])

    def _write_marks(self, conn: Connection, marks: Sequence[Watermark]) -> None:
        self._write(conn, read_marks, [self._mark_row(m) for m in _furthest(marks)])

    def _write_inbox(self, conn: Connection,
                     entries: Sequence[tuple[Sequence[int], Message]]) -> None:
        self._write(conn, inbox, [row for users, m in entries for row in _inbox_rows(users, m)])

    def store(self, batch: Sequence[Message]) -> None:
        if not batch:
            return
        with self.engine.begin() as conn:
            self._write_messages(conn, batch)

    def store_drained(self, batch: Sequence[Message], marks: Sequence[Watermark],
                      entries: Sequence[tuple[Sequence[int], Message]]) -> None:
        with self.engine.begin() as conn:  # one pool checkout and commit, not three
            self._write_messages(conn, batch)
            self._write_marks(conn, marks)
            self._write_inbox(conn, entries)

    def get(self, conversation_id: int, message_id: int) -> Message | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(messages).where(and_(
                messages.c.id == message_id,
                messages.c.conversation_id == conversation_id))).first()
        return _row_message(row) if row else None

    def page(self, conversation_id: int, *, before: int | None = None,
             after: int | None = None, around: int | None = None,
             limit: int = 50) -> list[Message]:
        if limit <= 0:
            return []
        conv = messages.c.conversation_id == conversation_id
        with self.engine.connect() as conn:
            anchor_id = before if before is not None else after if after is not None else around
            if anchor_id is None:
                rows = conn.execute(select(messages).where(conv)
                                    .order_by(messages.c.seq.desc()).limit(limit)).all()
                return [_row_message(r) for r in reversed(rows)]
            anchor = conn.execute(select(messages.c.seq).where(
                and_(conv, messages.c.id == anchor_id))).scalar()
            if anchor is None:
                raise KeyError(anchor_id)
            if before is not None:
                rows = conn.execute(select(messages).where(and_(conv, messages.c.seq < anchor))
                                    .order_by(messages.c.seq.desc()).limit(limit)).all()
                return [_row_message(r) for r in reversed(rows)]
            if after is not None:
                rows = conn.execute(select(messages).where(and_(conv, messages.c.seq > anchor))
                                    .order_by(messages.c.seq.asc()).limit(limit)).all()
                return [_row_message(r) for r in rows]
            older = conn.execute(select(messages).where(and_(conv, messages.c.seq <= anchor))
                                 .order_by(messages.c.seq.desc())
                                 .limit(limit - (limit - 1) // 2)).all()
            newer = conn.execute(select(messages).where(and_(conv, messages.c.seq > anchor))
                                 .order_by(messages.c.seq.asc())
                                 .limit(limit - len(older))).all()
        return [_row_message(r) for r in [*reversed(older), *newer]]

    def last_seq(self, conversation_id: int) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(select(func.max(messages.c.seq)).where(
                messages.c.conversation_id == conversation_id)).scalar()
        return int(value or 0)

    def find_by_client_msg_id(self, sender_id: int, client_msg_id: str) -> Message | None:
        """The message a sender stored under this idempotency key, if any.

        SQL only: the embedded engine's idempotency memory dies with its process, so the
        unique (sender, client_msg_id) index answers retries that span a restart.
        """
        with self.engine.connect() as conn:
            row = conn.execute(select(messages).where(and_(
                messages.c.sender_id == sender_id,
                messages.c.client_msg_id == client_msg_id))).first()
        return _row_message(row) if row else None

    @staticmethod
    def _mark_row(mark: Watermark) -> dict[str, Any]:
        return {"conversation_id": mark.conversation_id, "user_id": mark.user_id,
                "seq": mark.seq, "message_id": mark.message_id, "updated_at": mark.updated_at}

    def set_watermark(self, mark: Watermark) -> Watermark:
        with self.engine.begin() as conn:
            conn.execute(self._mark_stmt, self._mark_row(mark))
        return self.watermarks(mark.conversation_id, [mark.user_id])[mark.user_id]

    def set_watermarks(self, marks: Sequence[Watermark]) -> None:
        # One transaction for many marks, not one (and a read) per mark.
        if marks:
            with self.engine.begin() as conn:
                self._write_marks(conn, marks)

    def inbox_append_many(self, entries: Sequence[tuple[Sequence[int], Message]]) -> None:
        if entries:
            with self.engine.begin() as conn:
                self._write_inbox(conn, entries)

    def store_sent(self, batch: Sequence[Message], member_ids: Sequence[int]) -> None:
        """Messages, their senders' read marks and the members' inboxes: one transaction.

        The embedded mode's send path runs this before acknowledging, so one commit per
        message instead of three.
        """
        if not batch:
            return
        with self.engine.begin() as conn:
            self._write_messages(conn, batch)
            self._write_marks(conn, [Watermark(m.conversation_id, m.sender_id, m.seq, m.id,
                                               m.created_at) for m in batch])
            self._write_inbox(conn, [(member_ids, m) for m in batch])

    def watermarks(self, conversation_id: int,
                   user_ids: Iterable[int] | None = None) -> dict[int, Watermark]:
        query = select(read_marks).where(read_marks.c.conversation_id == conversation_id)
        if user_ids is not None:
            query = query.where(read_marks.c.user_id.in_(list(user_ids)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {r.user_id: Watermark(r.conversation_id, r.user_id, r.seq, r.message_id,
                                     r.updated_at) for r in rows}

    def inbox_append(self, user_ids: Iterable[int], message: Message) -> None:
        user_ids = list(user_ids)
        if not user_ids:
            return
        with self.engine.begin() as conn:
            self._write_inbox(conn, [(user_ids, message)])

    def inbox_page(self, user_id: int, after_message_id: int | None = None,
                   limit: int = 100) -> list[InboxEntry]:
        if limit <= 0:
            return []
        query = select(inbox).where(inbox.c.user_id == user_id)
        if after_message_id is not None:
            query = query.where(inbox.c.message_id > after_message_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(inbox.c.message_id).limit(limit)).all()
        return [InboxEntry(r.message_id, r.conversation_id, r.seq) for r in rows]

    def close(self) -> None:
        self.engine.dispose()
