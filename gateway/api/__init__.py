"""HTTP blueprints, one per area. Handlers parse, authenticate and hand off."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from gateway.api import accounts, conversations, discover, events, meta, presence, web

    for module in (accounts, conversations, events, presence, meta, discover, web):
        app.register_blueprint(module.bp)
    from gateway.api import devices

    app.register_blueprint(devices.bp)
    app.register_blueprint(meta.metrics_bp)
