"""A Python client for the RNN gradient service: one method per endpoint, problems raised as
ApiError carrying the RFC 9457 problem+json body.

    from rnnclient import Client
    api = Client("http://127.0.0.1:8000")
    problem = api.problems(seed=1, steps=4)
    result = api.grade(problem, {"gradients": {"b_h": [...]}})
"""
from .client import ApiError, Client, DEFAULT_URL

__all__ = ["ApiError", "Client", "DEFAULT_URL"]
