"""Switchboard's gateway: the Flask app serving the HTTP API and the four transports."""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin

from config import Settings

log = logging.getLogger(__name__)


def _secret_key(settings: Settings) -> str:
    """The configured key, or one generated once and kept in the data directory."""
    if settings.secret_key:
        return settings.secret_key
    os.makedirs(settings.data_dir, exist_ok=True)
    path = os.path.join(settings.data_dir, "secret_key")
    try:
        with open(path) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        key = secrets.token_hex(32)
        # O_EXCL: two workers starting together must not write different keys.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            with open(path) as handle:
                return handle.read().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key


def check_gevent() -> None:
    """Refuse to serve if gevent has not patched the standard library first."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        raise RuntimeError(
            "Switchboard must run under gevent with monkey-patching applied before "
            "anything imports sockets: serve it with `gunicorn -c config/gunicorn.conf.py "
            "wsgi:app` (gevent worker), or call gevent.monkey.patch_all() first.")


class _NoCookieSessions(SessionInterface):
    def open_session(self, app: Flask, request: Request) -> None:
        return None  # Flask then uses a null session, never saved

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


def create_app(config: Settings | dict[str, Any] | None = None) -> Flask:
    """Build the app. ``config``: Settings, or overrides on top of the environment."""
    if isinstance(config, Settings):
        settings = config
    else:
        settings = Settings.from_env(**(config or {}))
    if settings.require_gevent:
        check_gevent()

    from gateway import api, discovery, errors
    from gateway.services import EXTENSION, build_services
    from storage import models  # noqa: F401 - registers the tables for create_all
    from storage.db import create_tables, db, engine_options
    from storage.engines import database_url

    app = Flask(__name__, static_folder="static", static_url_path="/static")
    url = database_url(settings)
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(url),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
    )
    # Clients authenticate with bearer tokens, never cookies: no per-request work to
    # open and sign a cookie session nobody reads.
    app.session_interface = _NoCookieSessions()
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    db.init_app(app)
    with app.app_context():
        create_tables(db.engine, db.metadata)
    svc = build_services(settings)
    app.extensions[EXTENSION] = svc
    errors.init_app(app)
    discovery.init_app(app)
    api.init_app(app)

    # Flask-SQLAlchemy removes each app context's session at its teardown.
    if settings.require_gevent:
        svc.presence.run_sweeper(app, settings.presence_sweep_interval, live=svc.hub.watched)
    log.info("switchboard ready: engine=%s database=%s", svc.engine, url.split("@")[-1])
    return app
