import copy

import pytest

from service import create_app

SMALL = {
    "model": {"weights": {"V": [[0.1, 0.2], [0.3, -0.1]], "W": [[0.5, 0.1], [-0.2, 0.3]],
                          "U": [[1.0, 2.0], [0.5, -1.0], [0.3, 0.3]], "b_h": [0.0, 0.1],
                          "b_y": [0.0, 0.0, 0.1]}},
    "tokens": [0, 1, 1],
    "targets": [2, None, 0],
}


@pytest.fixture
def app():
    return create_app({"TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def small_body():
    """A tiny tokens problem (T 3, H 2, D 2, N 3) with a null target; a fresh copy per test."""
    return copy.deepcopy(SMALL)
