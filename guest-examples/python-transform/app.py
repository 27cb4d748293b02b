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

componentize-py mapping used here: the bindings package is `wit_world`; the interface export
`batch-transform` is implemented by a class named `BatchTransform` subclassing
`wit_world.exports.BatchTransform` (methods `init`, `transform_batch`; the runtime makes the
instance, so state lives at module level); `json` (list<u8>) is `bytes`; option<T> is
`Optional[T]`; u64 is `int`; enums are `Enum`s (`types.Action.DELETE`); variant cases are
dataclasses (`transform_types.Outcome_Keep()`, `Outcome_Update(Documents(data, before))`, `Outcome_Skip()`,
`Outcome_Failed(TransformError_InvalidRecord(ErrorInfo(code, message)))`); a `result` error is
raised as `componentize_py_types.Err(value)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, List

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, transform_types, types
from wit_world.imports.transform_types import (
    Documents,
    Outcome,
    Outcome_Failed,
    Outcome_Keep,
    Outcome_Many,
    Outcome_Skip,
    Outcome_Update,
)


@dataclasses.dataclass(frozen=True)
class Config:
    strip: tuple = ("password", "ssn", "creditCard")
    skip_email_domain: str | None = "@test.com"
    hash_email: bool = True
    full_name: bool = True
    skip_soft_deleted: bool = True
    rename: tuple = ()  # ((old, new), ...)
    add_fields: dict = dataclasses.field(default_factory=dict)


_config = Config()


def _bad_config(message: str) -> Err:
    return Err(transform_types.TransformError_InvalidConfig(types.ErrorInfo("invalid-config", message)))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Made once: json.loads/json.dumps with options build a new decoder or encoder on every call,
# which is a good part of the cost of a small record in the interpreter.
# NaN/Infinity are not JSON: refuse them as serde_json and JSON.parse do.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _parse_json(raw: bytes) -> Any:
    """UTF-8 JSON bytes -> value; raises ValueError on invalid UTF-8 or JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("invalid UTF-8") from None
    return _DECODER.decode(text)


_dump = _ENCODER.encode


# Unicode White_Space: what Rust's str::trim removes (Python's str.strip() differs slightly: it
# also removes U+001C..U+001F), so every example hashes the same email the same way.
_WS = "\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TRIM = re.compile(f"^[{_WS}]+|[{_WS}]+$")


def normalize_email(email: str) -> str:
    return _TRIM.sub("", email).lower()


def parse_config(raw: bytes) -> Config:
    """Validates the config bytes given to `init`; raises Err(invalid-config)."""
    if all(b in b" \t\n\f\r" for b in bytes(raw)):
        return Config()  # no config at all
    try:
        value = _parse_json(raw)
    except (ValueError, RecursionError) as e:
        raise _bad_config(f"config is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise _bad_config("config must be a JSON object")
    c: dict[str, Any] = {}
    for key, v in value.items():
        if key == "strip":
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise _bad_config("`strip` must be an array of strings")
            c["strip"] = tuple(v)
        elif key == "skipEmailDomain":
            if v is not None and not isinstance(v, str):
                raise _bad_config("`skipEmailDomain` must be a string or null")
            c["skip_email_domain"] = v.lower() if v else None  # null or "" turns it off
        elif key in ("hashEmail", "fullName", "skipSoftDeleted"):
            if not isinstance(v, bool):
                raise _bad_config(f"`{key}` must be a boolean")
            c[{"hashEmail": "hash_email", "fullName": "full_name"}.get(key, "skip_soft_deleted")] = v
        elif key == "rename":
            if not isinstance(v, dict):
                raise _bad_config("`rename` must be an object of old → new field names")
            for old, new in v.items():
                if not isinstance(new, str):
                    raise _bad_config(f"`rename.{old}` must be a string")
            c["rename"] = tuple(v.items())
        elif key == "addFields":
            if not isinstance(v, dict):
                raise _bad_config("`addFields` must be an object")
            c["add_fields"] = v
        else:
            raise _bad_config(f"unknown config key `{key}`")
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


def _failed(case: type, code: str, message: str) -> Outcome:
    return Outcome_Failed(case(types.ErrorInfo(code, message)))


_KEEP = Outcome_Keep()


def transform_one(c: Config, event: types.Event) -> Outcome:
    """One event -> one outcome (a variant of transform-types)."""
    if event.action == types.Action.DELETE or event.data is None:
        return _KEEP
    invalid = transform_types.TransformError_InvalidRecord
    try:
        data = _parse_json(event.data)
    except ValueError as e:
        return _failed(invalid, "invalid-json", f"data is not valid JSON: {e}")
    if not isinstance(data, dict):
        return _KEEP

    if data.get("failMe") is True:
        return _failed(invalid, "fail-me", "record asked to fail")
    if c.skip_soft_deleted and (data.get("deletedAt") is not None or data.get("deleted") is True):
        return Outcome_Skip()
    email = data.get("email")
    email = normalize_email(email) if isinstance(email, str) else None
    if c.skip_email_domain and email is not None and email.endswith(c.skip_email_domain):
        return Outcome_Skip()

    shape(c, data, email)

    before = None  # None: unchanged
    if event.before is not None:
        try:
            b = _parse_json(event.before)
        except ValueError as e:
            return _failed(invalid, "invalid-json", f"before is not valid JSON: {e}")
        if isinstance(b, dict):
            before = _dump(shape(c, b)).encode("utf-8")

    new_data = _dump(data).encode("utf-8")
    n = data.get("fanOut")
    if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 10:
        out = dataclasses.replace(event, data=new_data, before=event.before if before is None else before)
        return Outcome_Many([dataclasses.replace(out, id=f"{event.id}-{i}") for i in range(n)])
    # Only the changed documents cross back to the host: cheaper than a whole event.
    return Outcome_Update(Documents(new_data, before))


class BatchTransform(exports.BatchTransform):
    def init(self, config: bytes) -> None:
        global _config
        try:
            _config = parse_config(config)
        except Err:
            raise
        except Exception as e:  # noqa: BLE001 - anything else is still a config problem
            raise _bad_config(f"config rejected: {type(e).__name__}: {e}") from None
        log.log(log.Level.INFO, "python-transform: config accepted")

    def transform_batch(self, events: List[types.Event]) -> List[Outcome]:
        outcomes: List[Outcome] = []
        for event in events:
            try:
                o = transform_one(_config, event)
            except Exception as e:  # noqa: BLE001 - fail this record only, never trap
                o = _failed(transform_types.TransformError_Other, "internal", f"{type(e).__name__}: {e}")
            outcomes.append(o)
        skipped = sum(isinstance(o, Outcome_Skip) for o in outcomes)
        failed = sum(isinstance(o, Outcome_Failed) for o in outcomes)
        log.log(log.Level.DEBUG, f"python-transform: {len(events)} events, {skipped} skipped, {failed} failed")
        return outcomes
