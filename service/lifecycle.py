"""Process state shared with gunicorn's hooks: readiness fails once shutdown has begun."""
import threading

_stopping = threading.Event()


def begin_shutdown() -> None:
    _stopping.set()


def shutting_down() -> bool:
    return _stopping.is_set()
