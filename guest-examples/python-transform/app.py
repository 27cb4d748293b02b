"""Example replicator transform in Python: the same job as ../rust-transform (the transforms of
s3db.js's ReplicatorPlugin docs), built into a WebAssembly component of the world
`batch-transformer` (wit/plugin.wit) by componentize-py (see build.sh).

For insert/update events whose `data` is a JSON object, in this order:
 1. `failMe: true` -> failed(invalid-record, code "fail-me") (lets tests exercise failures);
 2. soft-deleted records (`deletedAt` non-null, or `deleted: true`) -> skip;
 3. `email` ending with `skipEmailDomain` (default "@test.com", case-insensitive) -> skip;
 4. `rename` old -> new fields;
 5. `fullName` = firstName + " " + lastName when both exist (non-strings as JSON text);
 6. `emailHash` = lowercase hex SHA-256 of the email, trimmed and lowercased;
 7. remove the `strip` fields (default password, ssn, creditCard);
 8. set the `addFields` (overwriting);
 9. `fanOut: n` (integer 1..10) -> many: n copies with ids `<id>-0` ... `<id>-<n-1>`.
`before` gets steps 4-8 too (so stripped fields don't leak through it). Deletes, and events whose
data is absent or not a JSON object, pass through unchanged; invalid JSON in `data` or `before`
fails that record only (code "invalid-json").

Config (JSON object, every key optional; any other key -> invalid-config):
  {"strip": [..], "skipEmailDomain": "@test.com" | null | "", "hashEmail": true,
   "fullName": true, "skipSoftDeleted": true, "rename": {"old": "new"}, "addFields": {"k": v}}

It is written with the Python SDK (../sdk/python/replicator_plugin.py, on the build's path):
the SDK exports `batch-transform`, parses the config and each document on first read (invalid
JSON in `data` or `before` fails that record as invalid-record/invalid-json), encodes the
outcomes, and fails a record whose code raises (other/exception) without touching the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from replicator_plugin import Event, InvalidConfig, define_transform, fail, info, json_bytes, keep, many, skip, update


@dataclasses.dataclass(frozen=True)
class Config:
    strip: tuple = ("password", "ssn", "creditCard")
    skip_email_domain: str | None = "@test.com"
    hash_email: bool = True
    full_name: bool = True
    skip_soft_deleted: bool = True
    rename: tuple = ()  # ((old, new), ...)
    add_fields: dict = dataclasses.field(default_factory=dict)



# JSON text of a name that is not a string (fullName), compact as the other examples write it.
_dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# Unicode White_Space: what Rust's str::trim removes (Python's str.strip() differs slightly: it
# also removes U+001C..U+001F), so every example hashes the same email the same way.
_WS = "\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TRIM = re.compile(f"^[{_WS}]+|[{_WS}]+$")


def normalize_email(email: str) -> str:
    return _TRIM.sub("", email).lower()


def parse_config(value: Any) -> Config:
    """Validates the config given to `init` (a JSON value, {} when none)."""
    if not isinstance(value, dict):
        raise InvalidConfig("config must be a JSON object")
    c: dict[str, Any] = {}
    for key, v in value.items():
        if key == "strip":
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise InvalidConfig("`strip` must be an array of strings")
            c["strip"] = tuple(v)
        elif key == "skipEmailDomain":
            if v is not None and not isinstance(v, str):
                raise InvalidConfig("`skipEmailDomain` must be a string or null")
            c["skip_email_domain"] = v.lower() if v else None  # null or "" turns it off
        elif key in ("hashEmail", "fullName", "skipSoftDeleted"):
            if not isinstance(v, bool):
                raise InvalidConfig(f"`{key}` must be a boolean")
            c[{"hashEmail": "hash_email", "fullName": "full_name"}.get(key, "skip_soft_deleted")] = v
        elif key == "rename":
            if not isinstance(v, dict):
                raise InvalidConfig("`rename` must be an object of old → new field names")
            for old, new in v.items():
                if not isinstance(new, str):
                    raise InvalidConfig(f"`rename.{old}` must be a string")
            c["rename"] = tuple(v.items())
        elif key == "addFields":
            if not isinstance(v, dict):
                raise InvalidConfig("`addFields` must be an object")
            c["add_fields"] = v
        else:
            raise InvalidConfig(f"unknown config key `{key}`")
    return Config(**c)


def shape(c: Config, obj: dict[str, Any], email_normalized: str | None = None) -> dict[str, Any]:
    """Steps 4-8: the field changes shared by `data` and `before` (mutates `obj`).
    `email_normalized`: the normalized email when the caller has it (used unless a rename may
    have changed the field)."""
    for old, new in c.rename:
        if old in obj:
            obj[new] = obj.pop(old)
    if c.full_name:

        def part(k: str) -> str | None:
            v = obj.get(k)
            return None if v is None else v if isinstance(v, str) else _dump(v)

        first, last = part("firstName"), part("lastName")
        if first is not None and last is not None:
            obj["fullName"] = f"{first} {last}"
    email = obj.get("email")
    if c.hash_email and isinstance(email, str):
        if email_normalized is None or c.rename:
            email_normalized = normalize_email(email)
        obj["emailHash"] = hashlib.sha256(email_normalized.encode("utf-8")).hexdigest()
    for field in c.strip:
        obj.pop(field, None)
    obj.update(c.add_fields)
    return obj


class ExampleTransform:
    def __init__(self) -> None:
        self.config = Config()

    def init(self, config: Any) -> None:
        self.config = parse_config(config)
        info("python-transform: config accepted")

    def transform(self, event: Event) -> Any:
        c = self.config
        if event.action == "delete":
            return keep()
        data = event.data  # parsed here, on first read
        if not isinstance(data, dict):
            return keep()  # absent, or not an object

        if data.get("failMe") is True:
            return fail("fail-me", "record asked to fail")
        if c.skip_soft_deleted and (data.get("deletedAt") is not None or data.get("deleted") is True):
            return skip()
        email = data.get("email")
        email = normalize_email(email) if isinstance(email, str) else None
        if c.skip_email_domain and email is not None and email.endswith(c.skip_email_domain):
            return skip()

        shape(c, data, email)
        b = event.before
        before = shape(c, b) if isinstance(b, dict) else None  # None: unchanged

        n = data.get("fanOut")
        if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 10:
            # Encoded once for all the copies; a key left out is the input's.
            copy = {"data": json_bytes(data)}
            if before is not None:
                copy["before"] = json_bytes(before)
            return many([{**copy, "id": f"{event.id}-{i}"} for i in range(n)])
        # Only the changed documents cross back to the host: cheaper than a whole event.
        return update(data=data, before=before)


BatchTransform = define_transform(ExampleTransform())
