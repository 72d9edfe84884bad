"""WSGI entry point: ``gunicorn -c config/gunicorn.conf.py wsgi:app``.

gevent must patch the standard library before anything imports sockets. gunicorn's
gevent worker patches before it loads this module; the call below covers other
launchers (it is a no-op when already patched), and create_app() refuses to start if
patching did not happen.
"""

from gevent import monkey

monkey.patch_all()

from gateway import create_app  # noqa: E402

app = create_app({"require_gevent": True})
