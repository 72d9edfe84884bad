"""Several processes starting at once on an empty PostgreSQL all come up.

Every gunicorn worker and RQ worker creates the missing tables when it starts; without
serialising that, concurrent CREATE TABLEs of one table fail in PostgreSQL's catalog
and the losing worker does not boot (seen on the benchmark's fresh database).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.servers import ROOT
from tests.services import require_service

pytestmark = pytest.mark.postgres

# Both table sets a worker creates: the app's models and SQL history.
_START = """
import sys, time
from sqlalchemy import create_engine
from storage import models
from storage.db import create_tables, db
from storage.history_sql import SqlHistoryStore
engine = create_engine(sys.argv[1], connect_args={"options": "-csearch_path=" + sys.argv[2]})
engine.connect().close()
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # all start together
create_tables(engine, db.metadata)
SqlHistoryStore(sys.argv[1], engine=engine)
"""


def test_concurrent_workers_create_the_schema_once_without_failing():
    url = require_service("postgres")
    schema = f"race_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        start = str(time.time() + 4)
        procs = [subprocess.Popen([sys.executable, "-c", _START, url, schema, start], cwd=ROOT,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, "\n".join(errors)
        tables = set(inspect(admin).get_table_names(schema=schema))
        assert {"users", "conversations", "messages", "read_marks"} <= tables
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
