"""The Flask-SQLAlchemy handle for users, friends, conversations and memberships."""

from __future__ import annotations

from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

_SCHEMA_LOCK = 0x5357_4244  # any constant: the advisory lock id for creating tables


def release_session() -> None:
    """Give this context's database connection back, if it took one (closing a scoped
    session that was never used would first create it: most requests never query)."""
    if db.session.registry.has():
        db.session.close()


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """Create the missing tables of ``metadata``.

    On PostgreSQL under a transaction-scoped advisory lock: every gunicorn worker and RQ
    worker does this at start, and two concurrent CREATE TABLEs of one table on an empty
    database race in the catalog (the loser fails on pg_type's unique index, and its
    worker does not boot).
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        metadata.create_all(conn)


def engine_options(url: str) -> dict[str, Any]:
    """Pool settings sized for thousands of greenlets sharing a few connections."""
    if url.startswith("sqlite"):
        # Long waits instead of "database is locked": SQLite serialises writers.
        return {"connect_args": {"timeout": 30, "check_same_thread": False},
                "pool_size": 10, "max_overflow": 40, "pool_timeout": 30}
    return {"pool_size": 10, "max_overflow": 20, "pool_timeout": 30, "pool_pre_ping": True}


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; NORMAL is durable across process
    # crashes (not power loss), the usual trade for an embedded chat server.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
