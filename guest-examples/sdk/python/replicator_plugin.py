"""replicator_plugin: replicator plugins in Python, built into WebAssembly components by
componentize-py 0.25.1 against wit/plugin.wit (package replicator:plugin@0.1.0).

A transform (world `batch-transformer`), in the app module given to componentize-py::

    from replicator_plugin import InvalidConfig, define_transform, keep, skip, update, fail

    class Mask:
        def init(self, config):        # the config as a JSON value, {} when none (optional)
            ...                        # raise InvalidConfig("`drop` must be a list") to refuse it
        def transform(self, event):    # one outcome per event
            return keep()

    BatchTransform = define_transform(Mask())   # componentize-py looks for this name

Outcomes: keep(), skip(), update(data=?, before=?) (new documents; one left out stays as it
came), many([partial events]) (dicts whose missing keys are the input's; an Event is taken
whole), fail(code, message) (invalid-record: the host dead-letters that record). An exception
in `transform` fails only that record: InvalidRecord as invalid-record with its code, anything
else as `other` with code "exception". The SDK turns a batch into one `transform` call per event;
define `transform_batch(self, events, each)` instead to see the batch, where `each(event)` is that
per-event call (an outcome, never an exception).

A driver (world `sink-driver`, or `http-driver` of wasi-http/ to make HTTP requests)::

    class Webhook:
        describe = DriverInfo(name="acme", version="0.1.0", max_batch_size=100, idempotent=True)
        def init(self, config): ...
        def replicate(self, events):       # the failures: [Failure(index, error)], [] = all written
            return []
        def health(self): return ok()      # or degraded(msg), unhealthy(msg) (optional)
        def close(self): ...               # (optional)

    Driver = define_driver(Webhook())

A driver refuses a whole batch by raising Unauthorized, Retryable(retry_after_ms=...), Rejected,
Fatal or InvalidConfig; any other exception is `fatal` with code "exception". `state` is the
host's key/value store (drivers only); `http_request` sends a request through wasi:http.

Events are Event objects: resource, action ("insert" | "update" | "delete"), id, timestamp,
source, sequence (int), and data, before, metadata as JSON values (None when absent), parsed on
first read (`data_bytes` etc. are the UTF-8 JSON bytes as the host sent them). A document that
is not valid JSON raises InvalidRecord (code "invalid-json") when read.

What componentize-py generates and this module hides: the bindings package `wit_world`, `bytes`
for json, dataclasses per variant case (`Outcome_Keep()`...), errors of a `result` raised as
`componentize_py_types.Err(value)`; an exception escaping an export traps the instance.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Sequence, Union

from componentize_py_types import Err
from wit_world import exports as _exports
from wit_world.imports import digest as _digest
from wit_world.imports import log as _log
from wit_world.imports import types as _types

# World-specific bindings: a transform's world has no driver or state, a driver's no outcomes.
try:
    from wit_world.imports import transform_types as _tt
except ImportError:
    _tt = None  # type: ignore[assignment]
try:
    from wit_world.exports import driver as _dt
except ImportError:
    _dt = None  # type: ignore[assignment]
try:
    from wit_world.imports import state as _state
except ImportError:
    _state = None  # type: ignore[assignment]
# wasi:http, in the world `http-driver` of wasi-http/ only. Imported here, not when first used:
# componentize-py keeps the modules imported while it builds, not the rest of the bindings.
try:
    from wit_world.imports import http_types as _ht
    from wit_world.imports import outgoing_handler as _outgoing
    from wit_world.imports import streams as _streams
except ImportError:
    _ht = _outgoing = _streams = None  # type: ignore[assignment]

__all__ = [
    "DriverInfo", "Event", "Failure", "Fatal", "HttpError", "HttpResponse", "InvalidConfig",
    "InvalidRecord", "PluginError", "Rejected", "Retryable", "Unauthorized", "debug",
    "define_driver", "define_transform", "degraded", "driver_error", "error", "events_to_json",
    "fail", "hmac", "http_request", "info", "json_bytes", "keep", "many", "ok", "parse_json",
    "sha256", "sha384", "sha512", "skip", "state", "trace", "unhealthy", "update", "warn",
]

# ------------------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Made once: json.loads/json.dumps with options build a decoder or encoder on every call.
# NaN and Infinity are not JSON: refused as JavaScript and serde_json refuse them.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_decode = _DECODER.decode
_encode = _ENCODER.encode


def parse_json(raw: bytes) -> Any:
    """UTF-8 JSON bytes -> value; raises ValueError on invalid UTF-8 or JSON."""
    return _decode(raw.decode("utf-8"))


def json_bytes(value: Any) -> bytes:
    """A JSON value -> compact UTF-8 JSON bytes; bytes are taken as JSON bytes already."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return _encode(value).encode("utf-8")


# ------------------------------------------------------------------------- log and digest

_L = _log.Level


def trace(message: object) -> None:
    _log.log(_L.TRACE, str(message))


def debug(message: object) -> None:
    _log.log(_L.DEBUG, str(message))


def info(message: object) -> None:
    _log.log(_L.INFO, str(message))


def warn(message: object) -> None:
    _log.log(_L.WARN, str(message))


def error(message: object) -> None:
    _log.log(_L.ERROR, str(message))


_ALGORITHMS = {"sha256": _digest.Algorithm.SHA256, "sha384": _digest.Algorithm.SHA384, "sha512": _digest.Algorithm.SHA512}


def _bytes_of(v: Union[str, bytes]) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


def sha256(data: Union[str, bytes]) -> str:
    """Lowercase hex SHA-256 computed by the host (a str is hashed as UTF-8)."""
    return _digest.hash(_digest.Algorithm.SHA256, _bytes_of(data))


def sha384(data: Union[str, bytes]) -> str:
    return _digest.hash(_digest.Algorithm.SHA384, _bytes_of(data))


def sha512(data: Union[str, bytes]) -> str:
    return _digest.hash(_digest.Algorithm.SHA512, _bytes_of(data))


def hmac(algorithm: str, key: Union[str, bytes], data: Union[str, bytes]) -> str:
    """Lowercase hex HMAC of `data` under `key`; algorithm "sha256" | "sha384" | "sha512"."""
    return _digest.hmac(_ALGORITHMS[algorithm], _bytes_of(key), _bytes_of(data))


# ------------------------------------------------------------------------------------ errors


class PluginError(Exception):
    """Base of the errors the SDK maps to the contract's; `code` defaults to the kind."""

    kind = "other"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.kind


class InvalidRecord(PluginError):
    """This record cannot be handled (transform: failed invalid-record; driver: rejected)."""

    kind = "invalid-record"


class InvalidConfig(PluginError):
    """The config given to `init` is unusable: name the key in the message."""

    kind = "invalid-config"


class Unauthorized(PluginError):
    """Driver: credentials refused (retried with back-off)."""

    kind = "unauthorized"


class Retryable(PluginError):
    """Driver: transient (network, 5xx, throttling); `retry_after_ms` is the least wait."""

    kind = "retryable"

    def __init__(self, message: str, code: Optional[str] = None, retry_after_ms: Optional[int] = None) -> None:
        super().__init__(message, code)
        self.retry_after_ms = retry_after_ms


class Rejected(PluginError):
    """Driver: permanent for this data (dead-lettered)."""

    kind = "rejected"


class Fatal(PluginError):
    """Driver: broken; the host closes and replaces the instance."""

    kind = "fatal"


def _message(e: BaseException) -> str:
    return e.message if isinstance(e, PluginError) else f"{type(e).__name__}: {e}"


# ------------------------------------------------------------------------------------ events

_A = _types.Action
_INSERT, _UPDATE, _DELETE = _A.INSERT, _A.UPDATE, _A.DELETE
_ACTIONS = {"insert": _INSERT, "update": _UPDATE, "delete": _DELETE}
_UNREAD: Any = object()


def _invalid_json(field: str, e: Exception) -> InvalidRecord:
    reason = "invalid UTF-8" if isinstance(e, UnicodeDecodeError) else str(e)
    return InvalidRecord(f"{field} is not valid JSON: {reason}", "invalid-json")


class Event:
    """One change of one record as the host sent it (`raw`), its documents parsed when read."""

    __slots__ = ("raw", "resource", "action", "id", "timestamp", "source", "sequence", "_data", "_before", "_metadata")

    def __init__(self, raw: _types.Event) -> None:
        self.raw = raw
        self.resource: str = raw.resource
        # Identity tests: an Enum's hash is computed in Python, a dict lookup would call it.
        a = raw.action
        self.action: str = "insert" if a is _INSERT else "update" if a is _UPDATE else "delete"
        self.id: str = raw.id
        self.timestamp: str = raw.timestamp
        self.source: Optional[str] = raw.source
        self.sequence: int = raw.sequence
        self._data = self._before = self._metadata = _UNREAD

    @property
    def data(self) -> Any:
        """The record after the change (the last known record for a delete); None when absent."""
        v = self._data
        if v is _UNREAD:
            raw = self.raw.data
            try:
                v = None if raw is None else _decode(raw.decode("utf-8"))
            except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                raise _invalid_json("data", e) from None
            self._data = v
        return v

    @property
    def before(self) -> Any:
        """The record before an update or delete, when the sender had it."""
        v = self._before
        if v is _UNREAD:
            raw = self.raw.before
            try:
                v = None if raw is None else _decode(raw.decode("utf-8"))
            except ValueError as e:
                raise _invalid_json("before", e) from None
            self._before = v
        return v

    @property
    def metadata(self) -> Any:
        v = self._metadata
        if v is _UNREAD:
            raw = self.raw.metadata
            try:
                v = None if raw is None else _decode(raw.decode("utf-8"))
            except ValueError as e:
                raise _invalid_json("metadata", e) from None
            self._metadata = v
        return v

    @property
    def data_bytes(self) -> Optional[bytes]:
        return self.raw.data

    @property
    def before_bytes(self) -> Optional[bytes]:
        return self.raw.before

    @property
    def metadata_bytes(self) -> Optional[bytes]:
        return self.raw.metadata

    def to_raw(self) -> _types.Event:
        """The event for the host; documents that were read are encoded again (they may have
        been changed in place)."""

        def doc(cached: Any, raw: Optional[bytes]) -> Optional[bytes]:
            return raw if cached is _UNREAD or cached is None else json_bytes(cached)

        r = self.raw
        return dataclasses.replace(
            r,
            data=doc(self._data, r.data),
            before=doc(self._before, r.before),
            metadata=doc(self._metadata, r.metadata),
        )


def events_to_json(events: Sequence[Union[Event, _types.Event]]) -> bytes:
    """UTF-8 JSON of an array of envelopes: resource, action, id, data, before, timestamp,
    source, sequence, metadata (null when absent), the documents as JSON values. Documents not
    read are copied as the host sent them, not parsed."""

    def text(v: Optional[str]) -> bytes:
        return b"null" if v is None else _encode(v).encode("utf-8")

    parts = []
    for e in events:
        raw = e.to_raw() if isinstance(e, Event) else e
        action = b"insert" if raw.action is _INSERT else b"update" if raw.action is _UPDATE else b"delete"
        parts.append(b"".join((
            b'{"resource":', text(raw.resource), b',"action":"', action, b'","id":', text(raw.id),
            b',"data":', raw.data or b"null", b',"before":', raw.before or b"null",
            b',"timestamp":', text(raw.timestamp), b',"source":', text(raw.source),
            b',"sequence":', str(raw.sequence).encode(), b',"metadata":', raw.metadata or b"null", b"}",
        )))
    return b"[" + b",".join(parts) + b"]"


# ---------------------------------------------------------------------------------- outcomes

if _tt is not None:
    _KEEP = _tt.Outcome_Keep()
    _SKIP = _tt.Outcome_Skip()
    # The outcomes the host takes as they are (a `many` of the SDK still needs the input's fields).
    _FINISHED = frozenset((_tt.Outcome_Keep, _tt.Outcome_Skip, _tt.Outcome_Update, _tt.Outcome_Failed))


class _Many:
    """`many`'s partial events, made whole by the SDK from the input event."""

    __slots__ = ("events",)

    def __init__(self, events: List[Any]) -> None:
        self.events = events


def keep() -> Any:
    """Send the event on as it came."""
    return _KEEP


def skip() -> Any:
    """Drop the event."""
    return _SKIP


def update(data: Any = None, before: Any = None) -> Any:
    """Send the event on with new documents (JSON values, or JSON bytes); None leaves one as it came."""
    return _tt.Outcome_Update(
        _tt.Documents(None if data is None else json_bytes(data), None if before is None else json_bytes(before))
    )


def many(events: Iterable[Union[dict, Event]]) -> Any:
    """Send these events instead: dicts whose missing keys are the input's (None data, before,
    source or metadata means none), or Events taken whole."""
    return _Many(list(events))


def fail(code: str, message: str) -> Any:
    """This record failed (invalid-record): dead-lettered, the others go on."""
    return _tt.Outcome_Failed(_tt.TransformError_InvalidRecord(_types.ErrorInfo(str(code), str(message))))


_MISSING: Any = object()


def _whole_event(p: Any, raw: _types.Event) -> _types.Event:
    if isinstance(p, Event):
        return p.to_raw()
    if not isinstance(p, dict):
        raise TypeError(f"many: {p!r} is not an event (a dict or an Event)")

    def doc(key: str, current: Optional[bytes]) -> Optional[bytes]:
        v = p.get(key, _MISSING)
        return current if v is _MISSING else None if v is None else json_bytes(v)

    source = p.get("source", _MISSING)
    return _types.Event(
        resource=p.get("resource", raw.resource),
        action=_ACTIONS[p["action"]] if "action" in p else raw.action,
        id=p.get("id", raw.id),
        data=doc("data", raw.data),
        before=doc("before", raw.before),
        timestamp=p.get("timestamp", raw.timestamp),
        source=raw.source if source is _MISSING else source,
        sequence=int(p.get("sequence", raw.sequence)),
        metadata=doc("metadata", raw.metadata),
    )


def _finish(o: Any, raw: _types.Event) -> Any:
    """An outcome as the host takes it; raises TypeError for something that is not one."""
    if type(o) in _FINISHED or isinstance(o, _tt.Outcome_Many):
        return o
    if isinstance(o, _Many):
        return _tt.Outcome_Many([_whole_event(p, raw) for p in o.events])
    raise TypeError(f"transform returned {o!r}, not an outcome (keep(), skip(), update(), many(), fail())")


def _failed(e: BaseException) -> Any:
    """An exception -> the failed outcome of one record."""
    if isinstance(e, InvalidRecord):
        return _tt.Outcome_Failed(_tt.TransformError_InvalidRecord(_types.ErrorInfo(e.code, e.message)))
    if isinstance(e, InvalidConfig):
        return _tt.Outcome_Failed(_tt.TransformError_InvalidConfig(_types.ErrorInfo(e.code, e.message)))
    code = e.code if isinstance(e, PluginError) else "exception"
    return _tt.Outcome_Failed(_tt.TransformError_Other(_types.ErrorInfo(code, _message(e))))


def _read_config(raw: bytes) -> Any:
    """Config bytes -> JSON value ({} when empty); raises InvalidConfig when not JSON."""
    if not raw.strip(b" \t\n\r"):
        return {}
    try:
        return parse_json(raw)
    except (ValueError, RecursionError) as e:
        reason = "invalid UTF-8" if isinstance(e, UnicodeDecodeError) else str(e)
        raise InvalidConfig(f"config is not JSON: {reason}") from None


# --------------------------------------------------------------------------------- transform


def define_transform(t: Any) -> type:
    """The class componentize-py exports as `batch-transform`: in the app module,
    `BatchTransform = define_transform(MyTransform())`."""
    transform: Optional[Callable[[Event], Any]] = getattr(t, "transform", None)
    batch: Optional[Callable[..., List[Any]]] = getattr(t, "transform_batch", None)
    init: Optional[Callable[[Any], None]] = getattr(t, "init", None)
    if transform is None and batch is None:
        raise TypeError("define_transform: the transform needs a transform(event) method")
    finished = _FINISHED

    def each(event: Event) -> Any:
        try:
            o = transform(event)  # type: ignore[misc]
            return o if type(o) in finished else _finish(o, event.raw)
        except Exception as e:  # noqa: BLE001 - one record fails, never the instance
            return _failed(e)

    class BatchTransform(_exports.BatchTransform):
        def init(self, config: bytes) -> None:
            try:
                value = _read_config(config)
                if init is not None:
                    init(value)
            except Exception as e:  # noqa: BLE001 - a refusal, never a trap
                failure = _failed(e).value
                if isinstance(failure, _tt.TransformError_InvalidRecord):
                    failure = _tt.TransformError_InvalidConfig(failure.value)
                raise Err(failure) from None

        def transform_batch(self, events: List[_types.Event]) -> List[Any]:
            if batch is None:
                # `each`, inlined: the common path saves a call per event.
                out = []
                append = out.append
                for raw in events:
                    try:
                        o = transform(Event(raw))  # type: ignore[misc]
                        append(o if type(o) in finished else _finish(o, raw))
                    except Exception as e:  # noqa: BLE001
                        append(_failed(e))
                return out
            try:
                outcomes = list(batch([Event(raw) for raw in events], each))
                if len(outcomes) != len(events):
                    raise TypeError(f"transform_batch returned {len(outcomes)} outcomes for {len(events)} events")
            except Exception as e:  # noqa: BLE001 - every record of the batch fails
                return [_failed(e) for _ in events]
            for i, o in enumerate(outcomes):
                if type(o) not in finished:
                    try:
                        outcomes[i] = _finish(o, events[i])
                    except Exception as e:  # noqa: BLE001
                        outcomes[i] = _failed(e)
            return outcomes

    return BatchTransform


# ------------------------------------------------------------------------------------ driver


@dataclasses.dataclass(frozen=True)
class DriverInfo:
    name: str
    version: str = "0.0.0"
    #: JSON Schema of the config, as a JSON value.
    config_schema: Any = None
    #: The largest batch `replicate` wants.
    max_batch_size: int = 100
    #: True when writing an event twice has no visible effect.
    idempotent: bool = False


class Failure(NamedTuple):
    """One event that was not written: its index in the batch and why (a PluginError)."""

    index: int
    error: BaseException


def ok() -> Any:
    return _dt.HealthStatus_Ok()


def degraded(message: str) -> Any:
    return _dt.HealthStatus_Degraded(str(message))


def unhealthy(message: str) -> Any:
    return _dt.HealthStatus_Unhealthy(str(message))


def driver_error(e: BaseException) -> Any:
    """An exception -> the driver-error variant it stands for (not a PluginError: fatal)."""
    info = _types.ErrorInfo(e.code if isinstance(e, PluginError) else "exception", _message(e))
    if isinstance(e, Retryable):
        ms = e.retry_after_ms
        return _dt.DriverError_Retryable(_dt.RetryHint(info, None if ms is None else max(0, min(0xFFFFFFFF, int(ms)))))
    if isinstance(e, InvalidConfig):
        return _dt.DriverError_InvalidConfig(info)
    if isinstance(e, Unauthorized):
        return _dt.DriverError_Unauthorized(info)
    if isinstance(e, (Rejected, InvalidRecord)):
        return _dt.DriverError_Rejected(info)
    return _dt.DriverError_Fatal(info)


def _replicate_result(failures: Any, n: int) -> Any:
    out = []
    for index, error in failures or ():
        if not isinstance(index, int) or not 0 <= index < n:
            raise TypeError(f"replicate: failure index {index!r} is not in the batch of {n}")
        out.append(_dt.EventFailure(index, driver_error(error)))
    return _dt.ReplicateResult(out)


_HEALTH = (
    (_dt.HealthStatus_Ok, _dt.HealthStatus_Degraded, _dt.HealthStatus_Unhealthy) if _dt is not None else ()
)


def define_driver(d: Any) -> type:
    """The class componentize-py exports as `driver`: in the app module,
    `Driver = define_driver(MyDriver())`. `d.describe` is a DriverInfo (or a method returning
    one); `d.replicate(events)` is required, `init`, `health` and `close` optional."""
    if not callable(getattr(d, "replicate", None)):
        raise TypeError("define_driver: the driver needs a replicate(events) method")

    class Driver(_exports.Driver):
        def describe(self) -> Any:
            i = d.describe() if callable(d.describe) else d.describe
            return _dt.DriverInfo(
                str(i.name),
                str(i.version),
                None if i.config_schema is None else json_bytes(i.config_schema),
                int(i.max_batch_size),
                bool(i.idempotent),
            )

        def init(self, config: bytes) -> None:
            try:
                value = _read_config(config)
                if hasattr(d, "init"):
                    d.init(value)
            except Exception as e:  # noqa: BLE001 - an err, never a trap
                raise Err(driver_error(e)) from None

        def replicate(self, events: List[_types.Event]) -> Any:
            try:
                return _replicate_result(d.replicate([Event(raw) for raw in events]), len(events))
            except Exception as e:  # noqa: BLE001 - the whole batch's error
                raise Err(driver_error(e)) from None

        def health(self) -> Any:
            if not hasattr(d, "health"):
                return ok()
            try:
                h = d.health()
            except Exception as e:  # noqa: BLE001
                return unhealthy(_message(e))
            if h is None or h == "ok":
                return ok()
            return h if isinstance(h, _HEALTH) else unhealthy(f"health returned {h!r}")

        def close(self) -> None:
            try:
                if hasattr(d, "close"):
                    d.close()
            except Exception as e:  # noqa: BLE001
                raise Err(driver_error(e)) from None

    return Driver


# ------------------------------------------------------------------------------------- state


class _State:
    """The host's key/value state for a driver: shared by its instances, kept for the life of
    the process, at most 1 MiB in all. (A transform's world has none.)"""

    @staticmethod
    def _host() -> Any:
        if _state is None:
            raise RuntimeError("state is for drivers: this component's world does not import it")
        return _state

    def get(self, key: str) -> Optional[bytes]:
        return self._host().get(key)

    def get_json(self, key: str) -> Any:
        raw = self._host().get(key)
        return None if raw is None else parse_json(raw)

    def set(self, key: str, value: Union[bytes, str]) -> None:
        """Stores bytes (a str as UTF-8); raises RuntimeError when the host refuses (its limit)."""
        try:
            self._host().set(key, _bytes_of(value))
        except Err as e:
            raise RuntimeError(f"state.set({key!r}): {e.value}") from None

    def set_json(self, key: str, value: Any) -> None:
        self.set(key, json_bytes(value))

    def delete(self, key: str) -> None:
        self._host().delete(key)


state = _State()

# -------------------------------------------------------------------------------------- HTTP


class HttpResponse(NamedTuple):
    status: int
    headers: List[tuple]  # (lowercase name, bytes value)
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """The first value of a header, as text (None when absent)."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v.decode("latin-1")
        return None


class HttpError(Exception):
    """No answer: DNS, connection, timeout, or a host outside the sandbox's allow-list."""


def _error_code(value: Any) -> str:
    """A wasi:http error-code case -> "connection-refused" (and its payload, if any)."""
    name = type(value).__name__.split("_", 1)[-1]
    text = re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()
    payload = getattr(value, "value", None)
    return text if payload is None else f"{text}: {payload}"


_URL = re.compile(r"^(https?)://([^/?#]+)([^#]*)", re.IGNORECASE)


def http_request(
    method: str,
    url: str,
    headers: Optional[Sequence[tuple]] = None,
    body: Optional[bytes] = None,
    timeout_ms: Optional[int] = None,
) -> HttpResponse:
    """Sends one request through wasi:http/outgoing-handler (so through the host's allow-list)
    and waits for the whole answer. Needs the world `http-driver` of wasi-http/ (see its
    world.wit for the componentize-py flags). Raises HttpError when there is no answer,
    ValueError for a URL or header the request cannot carry."""
    ht = _ht
    if ht is None:
        raise RuntimeError("http_request needs the world http-driver of wasi-http/ (see its world.wit)")
    m = _URL.match(url)
    if not m:
        raise ValueError(f"not an http(s) URL: {url}")
    scheme, authority, path = m.group(1).lower(), m.group(2), m.group(3) or "/"
    if not path.startswith("/"):
        path = "/" + path
    entries = [(k, _bytes_of(v)) for k, v in headers or ()]
    if body and not any(k.lower() == "content-length" for k, _ in entries):
        entries.append(("content-length", str(len(body)).encode()))  # rather than chunked
    try:
        fields = ht.Fields.from_list(entries)
    except Err as e:
        raise ValueError(f"headers refused: {_error_code(e.value)}") from None
    methods = {"GET": ht.Method_Get, "POST": ht.Method_Post, "PUT": ht.Method_Put, "DELETE": ht.Method_Delete, "PATCH": ht.Method_Patch, "HEAD": ht.Method_Head}
    request = ht.OutgoingRequest(fields)
    request.set_method(methods[method.upper()]() if method.upper() in methods else ht.Method_Other(method))
    request.set_scheme(ht.Scheme_Https() if scheme == "https" else ht.Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query(path)
    options = None
    if timeout_ms is not None:
        options = ht.RequestOptions()
        ns = int(timeout_ms) * 1_000_000
        options.set_connect_timeout(ns)
        options.set_first_byte_timeout(ns)
        options.set_between_bytes_timeout(ns)
    outgoing = request.body()
    try:
        future = _outgoing.handle(request, options)
    except Err as e:
        raise HttpError(f"{method} {url}: {_error_code(e.value)}") from None
    with future:
        try:
            if body:
                with outgoing.write() as sink:
                    # blocking-write-and-flush takes at most 4096 bytes per call.
                    for i in range(0, len(body), 4096):
                        sink.blocking_write_and_flush(body[i : i + 4096])
            ht.OutgoingBody.finish(outgoing, None)
        except Err:
            pass  # the request failed (the stream closed): the future says why
        with future.subscribe() as ready:
            ready.block()
        answer = future.get()
    # None: not ready (it is, after block); Err: taken before; Ok(Err(code)): no answer.
    if answer is None or isinstance(answer, Err):
        raise HttpError(f"{method} {url}: no response")
    if isinstance(answer.value, Err):
        raise HttpError(f"{method} {url}: {_error_code(answer.value.value)}")
    response = answer.value.value
    with response:
        status = response.status()
        with response.headers() as h:
            response_headers = h.entries()
        chunks = []
        with response.consume() as incoming:
            with incoming.stream() as source:
                while True:
                    try:
                        chunks.append(source.blocking_read(65536))
                    except Err as e:
                        if isinstance(e.value, _streams.StreamError_Closed):
                            break
                        raise HttpError(f"{method} {url}: the answer broke off") from None
    return HttpResponse(status, response_headers, b"".join(chunks))
