"""WSGI entry point: ``gunicorn -c config/gunicorn.conf.py wsgi:app``.

gevent must patch the standard library before anything imports sockets. gunicorn's
gevent worker patches before it loads this module; the call below covers other
launchers (it is a no-op when already patched), and create_app() refuses to start if
patching did not happen.
"""

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402

import gevent  # noqa: E402

from gateway import create_app  # noqa: E402

# Each greenlet would otherwise keep a record of the stack that spawned it: two
# greenlets per WebSocket, thousands of tracked objects for the collector to scan.
gevent.config.track_greenlet_tree = False

app = create_app({"require_gevent": True})

# Garbage-collector pauses stop every connection of the worker at once. Measured here
# (bench, 2,000 WebSocket users at 500 msg/s): full collections over the ~150k objects
# of a freshly loaded app plus ~100 per connection took 85-240 ms each and set the p99.
# Freezing what start-up loaded takes it out of every later collection, and larger
# thresholds make the young collections rarer: one full collection of ~30 ms per run.
gc.freeze()
gc.set_threshold(50_000, 20, 20)
