"""API keys: the keys file (RNN_API_KEYS_FILE) and `python -m service.keys`.

The file is a JSON list of {"name", "sha256", "scopes"}: the hex SHA-256 digest of each key,
never a key. A request's key is hashed and its digest compared, in constant time, with every
entry's (service/auth.py).

    python -m service.keys new grader-1 --scopes forward gradients gradcheck grade problems
    python -m service.keys digest < key.txt        # the sha256 entry for an existing key
"""
from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from .config import KEYS_FILE_VAR as ENV

SCOPES = ("forward", "gradients", "gradcheck", "grade", "problems")
Scope = Literal["forward", "gradients", "gradcheck", "grade", "problems"]


class KeyEntry(BaseModel):
    """One entry of the keys file. `name` is logged and is a metrics label: a short token."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    scopes: list[Scope] = Field(min_length=1)

    @field_validator("sha256")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()

    @field_validator("scopes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a scope is listed twice")
        return v


_FILE = TypeAdapter(list[KeyEntry])


class KeysFileError(Exception):
    """The keys file cannot be used; the message says which entry and why (never a value)."""


@dataclass(frozen=True)
class Key:
    name: str
    digest: bytes                 # the 32 raw bytes of the SHA-256
    scopes: frozenset[str]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load(path: str | Path) -> tuple[Key, ...]:
    """The keys of the file at `path`, or KeysFileError with a message naming the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise KeysFileError(f"{ENV}={path}: cannot read the keys file ({e.strerror})") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise KeysFileError(f"{ENV}={path}: not JSON ({e})") from None
    try:
        entries = _FILE.validate_python(data)
    except ValidationError as e:
        # loc and message only: an input value could be a key pasted by mistake
        problems = "; ".join(f"{'/'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}"
                             for err in e.errors(include_url=False, include_input=False)[:10])
        raise KeysFileError(f"{ENV}={path}: {e.error_count()} problem(s) in the keys file "
                            f"(a JSON list of {{\"name\", \"sha256\", \"scopes\"}}): {problems}") from None
    if not entries:
        raise KeysFileError(f"{ENV}={path}: the keys file lists no keys (every /v1 request would "
                            f"be refused); unset {ENV} to run open")
    for field in ("name", "sha256"):
        seen = [getattr(e, field) for e in entries]
        twice = sorted({i for i, v in enumerate(seen) if seen.index(v) != i})
        if twice:
            raise KeysFileError(f"{ENV}={path}: entry {twice[0]} repeats the {field} of an "
                                f"earlier entry; each {field} must be unique")
    return tuple(Key(e.name, bytes.fromhex(e.sha256), frozenset(e.scopes)) for e in entries)


def new(name: str, scopes: list[str]) -> tuple[str, dict]:
    """A fresh random key and the keys-file entry for it."""
    key = secrets.token_urlsafe(32)
    entry = KeyEntry(name=name, sha256=digest(key), scopes=scopes).model_dump()
    return key, entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.keys", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("new", help="print a fresh random key (once) and its keys-file entry")
    make.add_argument("name", help="the key's name: logged and a metrics label, e.g. grader-1")
    make.add_argument("--scopes", nargs="+", choices=SCOPES, required=True,
                      help="the endpoints the key may call")
    sub.add_parser("digest", help="read a key on standard input, print its sha256 entry value")
    check = sub.add_parser("check", help="validate a keys file as the service would")
    check.add_argument("file")
    args = parser.parse_args(argv)

    if args.command == "new":
        try:
            key, entry = new(args.name, args.scopes)
        except ValidationError as e:
            parser.error("; ".join(f"{'/'.join(map(str, err['loc']))}: {err['msg']}"
                                   for err in e.errors(include_url=False, include_input=False)))
        print(f"key (shown once; give it to the caller, store it nowhere else):\n{key}\n")
        print(f"entry for {ENV} (add it to the JSON list):\n{json.dumps(entry)}")
        return 0
    if args.command == "digest":
        print(digest(sys.stdin.readline().strip()))
        return 0
    try:
        keys = load(args.file)
    except KeysFileError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{len(keys)} key(s): " + ", ".join(f"{k.name} [{' '.join(sorted(k.scopes))}]" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
