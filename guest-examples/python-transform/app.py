"""Example replicator transform in Python, built into a WebAssembly component of the world
`record-transformer` (wit/plugin.wit) by componentize-py (see build.sh).

For insert/update events whose `data` is a JSON object:
  - skip soft-deleted records (`deletedAt` present and not null, or `deleted: true`);
  - skip records whose `email` ends with `skipEmailDomain` (default "@test.com");
  - remove the `strip` fields (default password, ssn, creditCard);
  - add `fullName` = firstName + " " + lastName when both are strings;
  - add `emailHash` = lowercase hex SHA-256 of the email, trimmed and lowercased.
Deletes, and events whose data is absent or not a JSON object, pass through unchanged.

Config (JSON object, every key optional):
  {"strip": [...], "skipEmailDomain": "@test.com" | null, "hashEmail": true, "fullName": true}

componentize-py mapping used here: the bindings package is `wit_world`; the interface export
`record-transform` is the class `RecordTransform` (subclassing `wit_world.exports.RecordTransform`,
instantiated by the runtime: keep state at module level or on the class); `json` (list<u8>) is
`bytes`; option<T> is `Optional[T]`; enums are `Enum`s (`types.Action.DELETE`); variant cases are
dataclasses (`transform_types.TransformError_InvalidRecord(ErrorInfo(...))`); a `result` error is
raised as `componentize_py_types.Err(value)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, transform_types, types

DEFAULTS: dict[str, Any] = {
    "strip": ("password", "ssn", "creditCard"),
    "skipEmailDomain": "@test.com",
    "hashEmail": True,
    "fullName": True,
}

_config: dict[str, Any] = dict(DEFAULTS)


def _fail(case: type, code: str, message: str) -> Err:
    """The exception componentize-py turns into `err(transform-error)`."""
    return Err(case(types.ErrorInfo(code=code, message=message)))


def _decode(data: bytes, case: type, what: str) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(case, "invalid-utf8", f"{what} is not valid UTF-8") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(text: str, case: type, what: str) -> Any:
    try:
        # NaN/Infinity are not JSON: refuse them as JavaScript's JSON.parse does.
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise _fail(case, "invalid-json", f"{what} is not valid JSON: {e}") from None


# Unicode White_Space, the set Rust's str::trim removes (Python's str.strip() and JS trim() differ
# slightly), so every example language hashes the same email the same way.
_WS = "\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TRIM = re.compile(f"^[{_WS}]+|[{_WS}]+$")


def normalize_email(email: str) -> str:
    return _TRIM.sub("", email).lower()


def email_hash(email: str) -> str:
    return hashlib.sha256(normalize_email(email).encode("utf-8")).hexdigest()


def parse_config(data: bytes) -> dict[str, Any]:
    """Validate a config; returns the effective config or raises Err(invalid-config)."""
    case = transform_types.TransformError_InvalidConfig
    text = _decode(data, case, "config")
    if text.strip() == "":
        return dict(DEFAULTS)  # no config at all: the defaults
    raw = _parse_json(text, case, "config")
    if not isinstance(raw, dict):
        raise _fail(case, "invalid-config", "config must be a JSON object")
    out = dict(DEFAULTS)
    for key, value in raw.items():
        if key == "strip":
            if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
                raise _fail(case, "invalid-value", "`strip` must be an array of field names (strings)")
            out["strip"] = tuple(value)
        elif key == "skipEmailDomain":
            if value is not None and not isinstance(value, str):
                raise _fail(case, "invalid-value", "`skipEmailDomain` must be a string or null")
            out["skipEmailDomain"] = value
        elif key in ("hashEmail", "fullName"):
            if not isinstance(value, bool):
                raise _fail(case, "invalid-value", f"`{key}` must be true or false")
            out[key] = value
        else:
            known = ", ".join(DEFAULTS)
            raise _fail(case, "unknown-key", f"unknown config key `{key}` (known: {known})")
    return out


def transform_document(doc: dict[str, Any], config: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The record logic on a parsed document: the new document, or None to skip it (mutates doc)."""
    if doc.get("deletedAt") is not None or doc.get("deleted") is True:
        return None
    email = doc.get("email")
    if not isinstance(email, str):
        email = None
    domain = config["skipEmailDomain"]
    if email is not None and domain and normalize_email(email).endswith(normalize_email(domain)):
        return None
    for field in config["strip"]:
        doc.pop(field, None)
    first, last = doc.get("firstName"), doc.get("lastName")
    if config["fullName"] and isinstance(first, str) and isinstance(last, str):
        doc["fullName"] = f"{first} {last}"
    if config["hashEmail"] and email is not None:
        doc["emailHash"] = email_hash(email)
    return doc


def transform_event(event: types.Event, config: dict[str, Any]) -> Optional[types.Event]:
    if event.action == types.Action.DELETE or event.data is None:
        return event
    case = transform_types.TransformError_InvalidRecord
    what = f"data of {event.resource}/{event.id}"
    doc = _parse_json(_decode(event.data, case, what), case, what)
    if not isinstance(doc, dict):
        return event
    out = transform_document(doc, config)
    if out is None:
        log.log(log.Level.DEBUG, f"skipped {event.resource}/{event.id}")
        return None
    data = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return dataclasses.replace(event, data=data)


def _guarded(fn, *args):
    """Anything raised that is not an Err becomes `other` rather than a trap."""
    try:
        return fn(*args)
    except Err:
        raise
    except Exception as e:  # noqa: BLE001 - the point is to catch everything
        raise _fail(transform_types.TransformError_Other, "internal", f"{type(e).__name__}: {e}") from None


class RecordTransform(exports.RecordTransform):
    def init(self, config: bytes) -> None:
        global _config
        _config = _guarded(parse_config, config)
        shown = dict(_config, strip=list(_config["strip"]))
        log.log(log.Level.INFO, f"python-transform ready: {json.dumps(shown)}")

    def transform(self, event: types.Event) -> Optional[types.Event]:
        return _guarded(transform_event, event, _config)
