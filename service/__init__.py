"""The RNN gradient-checking service: Flask app factory."""
from __future__ import annotations

import uuid

from flask import Flask, g, request

from . import config, errors
from .jsonio import OrjsonProvider


def _request_id() -> str:
    given = request.environ.get("HTTP_X_REQUEST_ID", "")    # the header's WSGI key: no Headers view
    if 0 < len(given) <= 128 and given.isascii() and given.isprintable():
        return given
    return uuid.uuid4().hex


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config.from_mapping(config.from_env())
    if test_config:
        app.config.from_mapping(test_config)

    @app.before_request
    def assign_request_id():
        g.request_id = _request_id()

    @app.after_request
    def add_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id") or _request_id()
        return response

    errors.register(app)
    from . import observability
    from .api import compute, docs, gradcheck, grade, health
    observability.init_app(app)
    for module in (health, compute, grade, gradcheck, docs):
        app.register_blueprint(module.bp)
    return app
