"""The browser side: the demo chat at ``/``.

The demo (``index.html``, ``app.css``, ``app.js``) and the JavaScript SDK
(``switchboard.js``) are plain files in ``gateway/static``, served by Flask's static
route at ``/static/``: no build step.
"""

from __future__ import annotations

from flask import Blueprint, current_app, send_from_directory

bp = Blueprint("web", __name__)


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    response = send_from_directory(current_app.static_folder or "static", "index.html")
    # The page names the SDK and app files; revalidate it so a deploy shows at once.
    response.headers["Cache-Control"] = "no-cache"
    return response
