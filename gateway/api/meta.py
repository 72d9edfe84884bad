"""Health and the API description."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gateway import metrics
from gateway.openapi import document
from gateway.services import services
from storage.db import db, release_session

bp = Blueprint("meta", __name__, url_prefix="/v1")


@bp.get("/health")
def health():
    svc = services()
    # worker_id: the Snowflake worker id this process leased (tests check no two live
    # workers share one); draining: set once SIGTERM began a graceful drain.
    return jsonify({"status": "ok", "engine": svc.engine,
                    "connections": dict(svc.hub.counts_by_transport()),
                    "worker_id": svc.ids.worker_id, "pid": os.getpid(),
                    "draining": svc.hub.closing is not None})


@bp.get("/ready")
def ready():
    """Readiness for load balancers: the databases answer and this node is not draining."""
    svc = services()
    problems = []
    if svc.hub.closing is not None:
        problems.append("draining")
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        problems.append("database")
    finally:
        release_session()
    try:
        svc.broker.tip(0)
    except Exception:  # any failure of the delivery engine means not ready
        problems.append("broker")
    body = {"ready": not problems, "problems": problems, "engine": svc.engine}
    return jsonify(body), 200 if not problems else 503


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())


# Outside /v1: where Prometheus looks by default.
metrics_bp = Blueprint("metrics", __name__)


@metrics_bp.get("/metrics")
def prometheus():
    body, content_type = metrics.render(services().jobs)
    return Response(body, content_type=content_type)
