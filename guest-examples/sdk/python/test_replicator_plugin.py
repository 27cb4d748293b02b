"""Plain-Python tests of replicator_plugin.py (no wasm): python3 test_replicator_plugin.py

The SDK imports the bindings componentize-py generates (`wit_world`, `componentize_py_types`).
They are generated into a temporary directory for one world holding everything the SDK uses
(batch-transformer and wasi-http/'s http-driver) by componentize-py: $PY_VENV/bin, else the
project's .venv (build.sh makes it), else PATH. The host's imports (log, digest, state) are
replaced by recorders.
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIT = HERE.parent / "wit"  # the repository's sdk/wit link, or a project's wit/


def _componentize_py() -> str:
    for venv in (os.environ.get("PY_VENV"), HERE.parent / ".venv"):
        if venv and (Path(venv) / "bin" / "componentize-py").exists():
            return str(Path(venv) / "bin" / "componentize-py")
    found = shutil.which("componentize-py")
    if not found:
        sys.exit("componentize-py not found: set PY_VENV to a venv with componentize-py==0.25.1")
    return found


GEN = Path(tempfile.mkdtemp(prefix="replicator-plugin-bindings-"))
subprocess.run(
    [_componentize_py(), "-d", str(WIT), "-d", str(HERE / "wasi-http"),
     "-w", "replicator:plugin/batch-transformer@0.1.0", "-w", "replicator:python-http/http-driver",
     "--import-interface-name", "replicator:plugin/types@0.1.0=types",
     "--import-interface-name", "wasi:http/types@0.2.12=http_types",
     "bindings", str(GEN)],
    check=True,
    stdout=subprocess.DEVNULL,
)
sys.path[:0] = [str(GEN), str(HERE)]

from componentize_py_types import Err  # noqa: E402
from wit_world.exports import driver as D  # noqa: E402
from wit_world.imports import digest, log, state, transform_types as T, types  # noqa: E402

LOGGED: list = []
STORED: dict = {}
REFUSE: list = []  # when not empty, state.set fails with its first item
log.log = lambda level, message: LOGGED.append((level, message))
digest.hash = lambda a, data: hashlib.new(a.name.lower(), data).hexdigest()
digest.hmac = lambda a, key, data: std_hmac.new(key, data, a.name.lower()).hexdigest()
state.get = STORED.get


def _set(key: str, value: bytes) -> None:
    if REFUSE:
        raise Err(REFUSE[0])
    STORED[key] = value


state.set = _set
state.delete = lambda key: STORED.pop(key, None)

import replicator_plugin as rp  # noqa: E402

ISO = "2026-01-01T00:00:00.000Z"


def raw(**fields) -> types.Event:
    e = dict(resource="users", action=types.Action.INSERT, id="u1", data=b'{"name":"Ada","password":"x"}',
             before=None, timestamp=ISO, source="app", sequence=2**64 - 1, metadata=b'{"requestId":"r1"}')
    e.update(fields)
    return types.Event(**e)


class Plain:
    """A transform from a function."""

    def __init__(self, fn, init=None):
        self.transform = fn
        if init is not None:
            self.init = init


def run(t, events, config=b"{}"):
    cls = rp.define_transform(t)
    cls().init(config)
    return cls().transform_batch(events)


def err_of(fn):
    try:
        fn()
    except Err as e:
        return e.value
    raise AssertionError("did not raise Err")


class Outcomes(unittest.TestCase):
    def test_keep_and_skip(self) -> None:
        self.assertIsInstance(run(Plain(lambda e: rp.keep()), [raw()])[0], T.Outcome_Keep)
        self.assertIsInstance(run(Plain(lambda e: rp.skip()), [raw()])[0], T.Outcome_Skip)

    def test_update_encodes_values_keeps_bytes_and_leaves_the_rest(self) -> None:
        [o] = run(Plain(lambda e: rp.update(data={**e.data, "n": 1})), [raw()])
        self.assertIsInstance(o, T.Outcome_Update)
        self.assertEqual(o.value.data, b'{"name":"Ada","password":"x","n":1}')
        self.assertIsNone(o.value.before)
        [o] = run(Plain(lambda e: rp.update(before=b'{"b":1}')), [raw()])
        self.assertEqual((o.value.data, o.value.before), (None, b'{"b":1}'))
        [o] = run(Plain(lambda e: rp.update(data={"name": "Zoë"})), [raw()])
        self.assertEqual(o.value.data, '{"name":"Zoë"}'.encode())

    def test_many_fills_missing_fields_from_the_input(self) -> None:
        given = raw()

        def fan(e):
            return rp.many([
                {"id": "u1-a"},
                {"resource": "audit", "action": "delete", "data": {"what": e.data["name"]}, "source": None, "metadata": None, "sequence": 5},
                e,
            ])

        [o] = run(Plain(fan), [given])
        self.assertIsInstance(o, T.Outcome_Many)
        a, b, c = o.value
        self.assertEqual(a, types.Event(**{**given.__dict__, "id": "u1-a"}))
        self.assertIs(a.data, given.data)  # not re-encoded
        self.assertEqual((b.resource, b.action, b.id, b.data, b.source, b.metadata, b.sequence),
                         ("audit", types.Action.DELETE, "u1", b'{"what":"Ada"}', None, None, 5))
        # An Event's documents that were read are encoded again (they may have changed in place).
        self.assertEqual((c.id, json.loads(c.data)), ("u1", {"name": "Ada", "password": "x"}))
        self.assertIs(c.metadata, given.metadata)

    def test_an_event_changed_in_place(self) -> None:
        def rename(e):
            e.data["name"] = "Bob"
            return rp.many([e])

        [o] = run(Plain(rename), [raw()])
        self.assertEqual(o.value[0].data, b'{"name":"Bob","password":"x"}')

    def test_fail_is_invalid_record_and_the_others_go_on(self) -> None:
        out = run(Plain(lambda e: rp.fail("no-name", "name is missing") if e.id == "bad" else rp.keep()),
                  [raw(id="bad"), raw()])
        self.assertEqual(out[0], T.Outcome_Failed(T.TransformError_InvalidRecord(types.ErrorInfo("no-name", "name is missing"))))
        self.assertIsInstance(out[1], T.Outcome_Keep)

    def test_exceptions_fail_that_record_only(self) -> None:
        def t(e):
            if e.id == "a":
                raise RuntimeError("boom")
            if e.id == "b":
                raise rp.InvalidRecord("too big", code="too-big")
            if e.id == "c":
                return None  # not an outcome
            if e.id == "d":
                return {}["x"]
            return rp.skip()

        out = run(Plain(t), [raw(id=i) for i in "abcde"])
        kinds = [(type(o).__name__, type(getattr(o, "value", None)).__name__) for o in out]
        self.assertEqual(kinds[:4], [("Outcome_Failed", "TransformError_Other"), ("Outcome_Failed", "TransformError_InvalidRecord"),
                                     ("Outcome_Failed", "TransformError_Other"), ("Outcome_Failed", "TransformError_Other")])
        self.assertEqual([o.value.value.code for o in out[:4]], ["exception", "too-big", "exception", "exception"])
        self.assertEqual(out[0].value.value.message, "RuntimeError: boom")
        self.assertIn("not an outcome", out[2].value.value.message)
        self.assertIsInstance(out[4], T.Outcome_Skip)


class Documents(unittest.TestCase):
    def test_parsed_on_first_read_only(self) -> None:
        e = rp.Event(raw(data=b"{not json", before=b'{"a":1}'))
        self.assertEqual(len(e.data_bytes), 9)  # the bytes, without parsing
        self.assertIs(e.before, e.before)  # parsed once
        with self.assertRaises(rp.InvalidRecord) as caught:
            e.data
        self.assertEqual(caught.exception.code, "invalid-json")
        self.assertTrue(caught.exception.message.startswith("data is not valid JSON"))
        self.assertIsNone(rp.Event(raw(metadata=None)).metadata)

    def test_unread_invalid_documents_cost_nothing_read_ones_fail_the_record(self) -> None:
        self.assertIsInstance(run(Plain(lambda e: rp.keep()), [raw(data=b"{")])[0], T.Outcome_Keep)
        [o] = run(Plain(lambda e: rp.update(data=e.data)), [raw(data=b"{")])
        self.assertIsInstance(o.value, T.TransformError_InvalidRecord)
        self.assertEqual(o.value.value.code, "invalid-json")
        [o] = run(Plain(lambda e: rp.update(data=e.data)), [raw(data=bytes.fromhex("7b2261223a22ff227d"))])
        self.assertEqual(o.value.value.message, "data is not valid JSON: invalid UTF-8")
        [o] = run(Plain(lambda e: rp.update(data=e.data)), [raw(data=b'{"n": NaN}')])
        self.assertEqual(o.value.value.code, "invalid-json")

    def test_envelope(self) -> None:
        e = rp.Event(raw(action=types.Action.UPDATE))
        self.assertEqual((e.resource, e.action, e.id, e.timestamp, e.source, e.sequence),
                         ("users", "update", "u1", ISO, "app", 2**64 - 1))
        self.assertEqual(rp.Event(raw(action=types.Action.DELETE)).action, "delete")

    def test_events_to_json(self) -> None:
        e = rp.Event(raw(before=b'{"a" : 1}', source=None))
        text = rp.events_to_json([e, raw(data=None, metadata=None)])
        out = json.loads(text)
        self.assertEqual(out[0], {"resource": "users", "action": "insert", "id": "u1", "data": {"name": "Ada", "password": "x"},
                                  "before": {"a": 1}, "timestamp": ISO, "source": None, "sequence": 2**64 - 1, "metadata": {"requestId": "r1"}})
        self.assertIn(b'"before":{"a" : 1}', text)  # copied as it came
        self.assertEqual([out[1][k] for k in ("data", "before", "source", "metadata")], [None, None, "app", None])


class Init(unittest.TestCase):
    def test_config_as_a_value_and_refusals_as_err(self) -> None:
        seen = []
        cls = rp.define_transform(Plain(lambda e: rp.keep(), init=seen.append))
        for config in (b"", b" \n", b'{"drop":["a"]}'):
            cls().init(config)
        self.assertEqual(seen, [{}, {}, {"drop": ["a"]}])
        bad = err_of(lambda: cls().init(b'{"drop":'))
        self.assertIsInstance(bad, T.TransformError_InvalidConfig)
        self.assertIn("config is not JSON", bad.value.message)

        def refuse(config):
            raise rp.InvalidConfig("`drop` must be a list")

        self.assertEqual(err_of(lambda: rp.define_transform(Plain(rp.keep, init=refuse))().init(b"{}")),
                         T.TransformError_InvalidConfig(types.ErrorInfo("invalid-config", "`drop` must be a list")))
        buggy = err_of(lambda: rp.define_transform(Plain(rp.keep, init=lambda c: c["x"]))().init(b"{}"))
        self.assertIsInstance(buggy, T.TransformError_Other)
        self.assertEqual(buggy.value.code, "exception")


class BatchOverride(unittest.TestCase):
    def test_each_is_the_per_event_path_and_outcomes_are_finished(self) -> None:
        class T1:
            def transform(self, e):
                if e.id == "x":
                    raise ValueError("x")
                return rp.keep()

            def transform_batch(self, events, each):
                out = [each(e) for e in events]
                out[0] = rp.many([{"id": "first"}])
                return out

        out = run(T1(), [raw(id="a"), raw(id="x")])
        self.assertEqual((out[0].value[0].id, out[0].value[0].resource), ("first", "users"))
        self.assertIsInstance(out[1].value, T.TransformError_Other)

    def test_a_wrong_length_fails_every_record(self) -> None:
        class Short:
            def transform_batch(self, events, each):
                return [rp.keep()]

        out = run(Short(), [raw(), raw()])
        self.assertEqual([o.value.value.code for o in out], ["exception", "exception"])
        self.assertIn("1 outcomes for 2 events", out[0].value.value.message)
        self.assertEqual(run(Plain(rp.keep), []), [])


class Host(unittest.TestCase):
    def test_log_and_digest(self) -> None:
        LOGGED.clear()
        rp.info("hello")
        rp.trace(42)
        self.assertEqual(LOGGED, [(log.Level.INFO, "hello"), (log.Level.TRACE, "42")])
        self.assertEqual(rp.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        self.assertEqual(rp.sha256(b"abc"), rp.sha256("abc"))
        self.assertEqual((len(rp.sha384("")), len(rp.sha512(""))), (96, 128))
        self.assertEqual(rp.hmac("sha256", "key", "The quick brown fox jumps over the lazy dog"),
                         "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")

    def test_state(self) -> None:
        rp.state.set("a", b"\x01\x02")
        self.assertEqual(rp.state.get("a"), b"\x01\x02")
        rp.state.set("s", "héllo")
        self.assertEqual(rp.state.get("s"), "héllo".encode())
        rp.state.set_json("j", {"token": "t", "n": 1})
        self.assertEqual(rp.state.get_json("j"), {"token": "t", "n": 1})
        rp.state.delete("j")
        self.assertIsNone(rp.state.get_json("j"))
        REFUSE.append("state is full (1 MiB)")
        try:
            with self.assertRaisesRegex(RuntimeError, "state.set\\('big'\\): state is full"):
                rp.state.set("big", "x")
        finally:
            REFUSE.clear()


def driver(**methods):
    d = type("D", (), methods)()
    d.describe = methods.get("describe", rp.DriverInfo(name="acme"))
    return rp.define_driver(d)()


class Drivers(unittest.TestCase):
    def test_describe(self) -> None:
        self.assertEqual(driver(replicate=lambda s, e: []).describe(), D.DriverInfo("acme", "0.0.0", None, 100, False))
        info = rp.DriverInfo(name="acme", version="1.2.3", config_schema={"type": "object"}, max_batch_size=10, idempotent=True)
        self.assertEqual(driver(replicate=lambda s, e: [], describe=info).describe(),
                         D.DriverInfo("acme", "1.2.3", b'{"type":"object"}', 10, True))

    def test_init(self) -> None:
        seen = []
        d = driver(replicate=lambda s, e: [], init=lambda s, c: seen.append(c))
        d.init(b"")
        d.init(b'{"url":"http://x"}')
        self.assertEqual(seen, [{}, {"url": "http://x"}])
        self.assertIsInstance(err_of(lambda: d.init(b"nope")), D.DriverError_InvalidConfig)

        def refuse(s, c):
            raise rp.InvalidConfig("`url` is required")

        self.assertEqual(err_of(lambda: driver(replicate=lambda s, e: [], init=refuse).init(b"{}")),
                         D.DriverError_InvalidConfig(types.ErrorInfo("invalid-config", "`url` is required")))

    def test_replicate_failures_per_index(self) -> None:
        got = []

        def replicate(s, events):
            got.extend(events)
            return [rp.Failure(0, rp.Rejected("mapping refused", code="http-400")), (2, rp.InvalidRecord("bad doc", code="invalid-json"))]

        result = driver(replicate=replicate).replicate([raw(id="a"), raw(id="b"), raw(id="c")])
        self.assertEqual(result, D.ReplicateResult([
            D.EventFailure(0, D.DriverError_Rejected(types.ErrorInfo("http-400", "mapping refused"))),
            D.EventFailure(2, D.DriverError_Rejected(types.ErrorInfo("invalid-json", "bad doc"))),
        ]))
        self.assertEqual([(e.id, e.data) for e in got], [("a", {"name": "Ada", "password": "x"})] + [(i, {"name": "Ada", "password": "x"}) for i in "bc"])
        self.assertEqual(driver(replicate=lambda s, e: None).replicate([raw()]), D.ReplicateResult([]))

    def test_whole_batch_errors(self) -> None:
        def thrown(exc):
            def replicate(s, events):
                raise exc

            return err_of(lambda: driver(replicate=replicate).replicate([raw()]))

        self.assertEqual(thrown(rp.Unauthorized("token refused", code="http-401")),
                         D.DriverError_Unauthorized(types.ErrorInfo("http-401", "token refused")))
        self.assertEqual(thrown(rp.Retryable("busy", code="http-503", retry_after_ms=3000)),
                         D.DriverError_Retryable(D.RetryHint(types.ErrorInfo("http-503", "busy"), 3000)))
        self.assertEqual(thrown(rp.Retryable("down")), D.DriverError_Retryable(D.RetryHint(types.ErrorInfo("retryable", "down"), None)))
        self.assertEqual(thrown(rp.Retryable("x", retry_after_ms=2**40)).value.retry_after_ms, 0xFFFFFFFF)
        self.assertIsInstance(thrown(rp.Rejected("no")), D.DriverError_Rejected)
        self.assertEqual(thrown(rp.Fatal("broken")), D.DriverError_Fatal(types.ErrorInfo("fatal", "broken")))
        self.assertEqual(thrown(KeyError("k")), D.DriverError_Fatal(types.ErrorInfo("exception", "KeyError: 'k'")))
        bad_index = err_of(lambda: driver(replicate=lambda s, e: [(5, rp.Rejected("x"))]).replicate([raw()]))
        self.assertIsInstance(bad_index, D.DriverError_Fatal)

    def test_health_and_close(self) -> None:
        self.assertEqual(driver(replicate=lambda s, e: []).health(), D.HealthStatus_Ok())
        self.assertEqual(driver(replicate=lambda s, e: [], health=lambda s: rp.degraded("slow")).health(), D.HealthStatus_Degraded("slow"))

        def broken(s):
            raise RuntimeError("x")

        self.assertEqual(driver(replicate=lambda s, e: [], health=broken).health(), D.HealthStatus_Unhealthy("RuntimeError: x"))
        self.assertIsNone(driver(replicate=lambda s, e: []).close())

        def flush_fails(s):
            raise rp.Fatal("flush failed")

        self.assertIsInstance(err_of(lambda: driver(replicate=lambda s, e: [], close=flush_fails).close()), D.DriverError_Fatal)


class Http(unittest.TestCase):
    def test_error_codes_read_as_text(self) -> None:
        from wit_world.imports import http_types as ht

        self.assertEqual(rp._error_code(ht.ErrorCode_ConnectionRefused()), "connection-refused")
        self.assertEqual(rp._error_code(ht.ErrorCode_InternalError("boom")), "internal-error: boom")

    def test_refuses_what_it_cannot_send(self) -> None:
        with self.assertRaisesRegex(ValueError, "not an http"):
            rp.http_request("GET", "ftp://example.com/")

    def test_response_headers(self) -> None:
        r = rp.HttpResponse(503, [("retry-after", b"3")], b"")
        self.assertEqual((r.header("Retry-After"), r.header("x")), ("3", None))


if __name__ == "__main__":
    try:
        unittest.main()
    finally:
        shutil.rmtree(GEN, ignore_errors=True)
