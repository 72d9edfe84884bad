"""SQL implementations on a real PostgreSQL: each test gets a schema of its own."""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text

from storage.history_sql import SqlHistoryStore


def make_postgres_history(url: str, request) -> SqlHistoryStore:  # type: ignore[no-untyped-def]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})

    def drop() -> None:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    request.addfinalizer(drop)
    return SqlHistoryStore(url, engine=engine)
