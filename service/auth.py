"""Bearer keys with scopes on /v1/... (RNN_API_KEYS_FILE; service/keys.py reads the file).

Without a keys file nothing is registered: the service is open and costs nothing extra. With
one, a before_request hook checks every /v1/ request: no key, a malformed header or an unknown
key is a 401 with `WWW-Authenticate: Bearer ...` (RFC 6750), a known key without the
endpoint's scope a 403. Every other path (/healthz, /readyz, /metrics, /openapi.yaml, /docs,
/explore) stays open. The presented key is hashed and its digest compared with every entry's by
hmac.compare_digest, without stopping at a match, so the time taken says nothing about which
entry, or how much of one, matched. The key's name goes to g.key_name (the access line and
the per-key metric); the key and the header never leave this function.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re

from flask import Flask, g, request

from . import keys as keyfile
from .errors import problem_response

REALM = 'Bearer realm="rnn"'
# RFC 6750's b64token: what a bearer key may look like (token_urlsafe keys fit)
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_MAX_TOKEN = 512


def unauthorized(detail: str, error: str | None = None):
    challenge = REALM if error is None else f'{REALM}, error="{error}"'
    return problem_response(401, "Unauthorized", detail, "/problems/unauthorized",
                            headers={"WWW-Authenticate": challenge})


def forbidden(name: str, scope: str | None):
    if scope is None:
        detail = f"the key {name!r} may not call this endpoint: it belongs to no scope"
        headers = None
    else:
        detail = f"the key {name!r} lacks the scope {scope!r} this endpoint needs"
        headers = {"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope}"'}
    return problem_response(403, "Forbidden", detail, "/problems/forbidden", headers=headers)


def make_hook(entries: tuple[keyfile.Key, ...]):
    table = tuple((k.digest, k) for k in entries)
    scopes: dict[str, str | None] = {}          # route pattern -> scope, filled on first use
    compare, sha256 = hmac.compare_digest, hashlib.sha256

    def scope_of(rule: str) -> str | None:
        found = scopes.get(rule, "")
        if found == "":
            name = rule[len("/v1/"):]
            found = scopes[rule] = name if name in keyfile.SCOPES else None
        return found

    def check_key():
        # proxies resolved once (each `request.x` through the proxy costs ~1 µs)
        req = request._get_current_object()
        environ, rule = req.environ, req.url_rule
        # protected: a /v1/ route, or any /v1/ path (an unknown one is 401 too, not 404)
        if not (rule.rule if rule is not None else environ.get("PATH_INFO", "")).startswith("/v1/"):
            return None
        header = environ.get("HTTP_AUTHORIZATION")
        if header is None:
            return unauthorized("this endpoint needs an API key: send Authorization: Bearer <key>")
        scheme, _, token = header.partition(" ")
        token = token.strip(" ")
        if (scheme.lower() != "bearer" or len(token) > _MAX_TOKEN
                or _TOKEN.fullmatch(token) is None):
            return unauthorized("the Authorization header is not of the form Bearer <key>",
                                "invalid_request")
        presented = sha256(token.encode()).digest()
        hits = [key for digest, key in table if compare(digest, presented)]   # every entry
        if not hits:
            return unauthorized("the API key is not valid", "invalid_token")
        match = hits[0]
        g._get_current_object().key_name = match.name
        if rule is None:                          # 404/405: routing answers, for a valid key
            return None
        scope = scope_of(rule.rule)
        if scope is None or scope not in match.scopes:
            return forbidden(match.name, scope)
        return None

    return check_key


def init_app(app: Flask) -> None:
    """Loads the keys file named by API_KEYS_FILE once (KeysFileError stops the start-up)."""
    path = app.config.get("API_KEYS_FILE")
    if not path:
        app.config["API_KEYS"] = None
        return
    try:
        entries = keyfile.load(path)
    except keyfile.KeysFileError as e:
        # one plain line in gunicorn's log before the traceback; gunicorn then exits non-zero
        logging.getLogger("service").critical("cannot start: %s", e)
        raise
    app.config["API_KEYS"] = tuple(k.name for k in entries)   # names only, for introspection
    app.before_request(make_hook(entries))
