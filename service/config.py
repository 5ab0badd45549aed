"""Configuration from the environment; every limit has a documented default (README)."""
from __future__ import annotations

import os

from schemas.limits import Limits

# environment variable -> (config key, type, default)
SETTINGS = {
    "RNN_MAX_BODY_BYTES": ("MAX_CONTENT_LENGTH", int, 16 * 1024 * 1024),
    "RNN_MAX_T": ("MAX_T", int, 10_000),
    "RNN_MAX_H": ("MAX_H", int, 4_096),
    "RNN_MAX_D": ("MAX_D", int, 4_096),
    "RNN_MAX_N": ("MAX_N", int, 4_096),
    "RNN_MAX_B": ("MAX_B", int, 1_024),
    "RNN_MAX_BPTT_TERMS": ("MAX_BPTT_TERMS", int, 4_000_000),
    "RNN_MAX_WORK": ("MAX_WORK", float, 2e10),
    "RNN_GRADCHECK_MAX_WORK": ("GRADCHECK_MAX_WORK", float, 4e10),
}
# a JSON list of {"name", "sha256", "scopes"} (service/keys.py); unset or empty: the service is
# open. Not in SETTINGS, whose entries are the numeric limits.
KEYS_FILE_VAR = "RNN_API_KEYS_FILE"


def from_env(env=os.environ) -> dict:
    config = {}
    for var, (key, kind, default) in SETTINGS.items():
        config[key] = kind(env[var]) if env.get(var) else default
    config["API_KEYS_FILE"] = env.get(KEYS_FILE_VAR) or None
    return config


def limits(config) -> Limits:
    return Limits(max_T=config["MAX_T"], max_H=config["MAX_H"], max_D=config["MAX_D"],
                  max_N=config["MAX_N"], max_B=config["MAX_B"], max_bptt_terms=config["MAX_BPTT_TERMS"],
                  max_work=config["MAX_WORK"])
