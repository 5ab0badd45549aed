"""The RNN gradient-checking service: Flask app factory."""
from __future__ import annotations

from flask import Flask

from . import config, errors
from .jsonio import OrjsonProvider


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config.from_mapping(config.from_env())
    if test_config:
        app.config.from_mapping(test_config)

    errors.register(app)
    from . import auth, observability
    from .api import compute, docs, gradcheck, grade, health
    from .api import explore
    observability.init_app(app)          # request ids, access log, metrics
    auth.init_app(app)                   # API keys (RNN_API_KEYS_FILE), after the request id
    for module in (health, compute, grade, gradcheck, docs, explore):
        app.register_blueprint(module.bp)
    return app
