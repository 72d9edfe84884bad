"""Health and the API description."""

from __future__ import annotations

from flask import Blueprint, jsonify

from gateway.openapi import document
from gateway.services import services

bp = Blueprint("meta", __name__, url_prefix="/v1")


@bp.get("/health")
def health():
    svc = services()
    return jsonify({"status": "ok", "engine": svc.engine,
                    "connections": dict(svc.hub.counts_by_transport())})


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
