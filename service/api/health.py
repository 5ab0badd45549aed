"""Liveness, readiness and the machine-readable contract."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

from .. import lifecycle

bp = Blueprint("health", __name__)
OPENAPI = Path(__file__).resolve().parents[2] / "openapi.yaml"


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    if lifecycle.shutting_down():
        return Response(b'{"status":"shutting down"}', status=503, mimetype="application/json")
    return {"status": "ready"}


@bp.get("/openapi.yaml")
def openapi():
    return Response(OPENAPI.read_bytes(), mimetype="application/yaml")
