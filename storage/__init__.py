"""Stateful roles of Switchboard: relational models, history, the delivery log, presence.

Each role is an interface (``broker.py``, ``history.py``, ``presence.py``) with its
implementations beside it (``*_memory.py``, ``*_sql.py``, later ``*_redis.py`` and
``*_cassandra.py``). Nothing here imports the HTTP layer, so workers can use it too.
"""
