"""Plain-Python tests of app.py (no wasm): python3 test_app.py  (or: python3 -m unittest test_app)

app.py (through the SDK, ../sdk/python) imports the bindings componentize-py generates (`wit_world`, `componentize_py_types`);
they are generated into gen/ (gitignored) on first run with the venv's componentize-py
($PY_VENV or .venv, as build.sh makes it), and the host's `log` import is replaced by a recorder.
The cases are ../transform-cases.json, shared with the JS example and run-component.mjs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
GEN = HERE / "gen"
WIT = HERE.parent.parent / "wit"
WORLD = "batch-transformer"
CASES = json.loads((HERE.parent / "transform-cases.json").read_text(encoding="utf-8"))


def _componentize_py() -> str:
    venv = Path(os.environ.get("PY_VENV", HERE / ".venv"))
    exe = venv / "bin" / "componentize-py"
    if exe.exists():
        return str(exe)
    found = shutil.which("componentize-py")
    if not found:
        sys.exit("componentize-py not found: run ./build.sh first (it makes the venv)")
    return found


def _ensure_bindings() -> None:
    stamp = GEN / ".wit"
    wit_text = WORLD + "\n" + (WIT / "plugin.wit").read_text(encoding="utf-8")
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wit_text:
        return
    shutil.rmtree(GEN, ignore_errors=True)
    subprocess.run(
        [_componentize_py(), "-d", str(WIT), "-w", WORLD, "bindings", str(GEN)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    stamp.write_text(wit_text, encoding="utf-8")


_ensure_bindings()
sys.path[:0] = [str(GEN), str(HERE), str(HERE.parent / "sdk" / "python")]

from componentize_py_types import Err  # noqa: E402
from wit_world.imports import log, transform_types, types  # noqa: E402

LOGGED: list[tuple[log.Level, str]] = []
log.log = lambda level, message: LOGGED.append((level, message))  # the host's import, recorded

import app  # noqa: E402

TAGS = {
    "invalid-record": transform_types.TransformError_InvalidRecord,
    "invalid-config": transform_types.TransformError_InvalidConfig,
    "other": transform_types.TransformError_Other,
}
O = transform_types


def _bytes_of(obj: dict, key: str) -> bytes | None:
    if f"{key}Hex" in obj:
        return bytes.fromhex(obj[f"{key}Hex"])
    if f"{key}Raw" in obj:
        return obj[f"{key}Raw"].encode("utf-8")
    if obj.get(key) is None:
        return None
    return json.dumps(obj[key], ensure_ascii=False).encode("utf-8")


def _event(case: dict) -> types.Event:
    e = {**CASES["eventDefaults"], **case["event"]}
    return types.Event(
        resource=e["resource"],
        action=types.Action[e["action"].upper()],
        id=e["id"],
        data=_bytes_of(e, "data"),
        before=_bytes_of(e, "before"),
        timestamp=e["timestamp"],
        source=e.get("source"),
        sequence=int(e["sequence"]),
        metadata=_bytes_of(e, "metadata"),
    )


def _event_of(data: bytes, action: types.Action = types.Action.INSERT) -> types.Event:
    return types.Event("users", action, "u9", data, None, "t", None, 1, None)


class SharedCases(unittest.TestCase):
    def test_cases(self) -> None:
        for case in CASES["cases"]:
            with self.subTest(case["name"]):
                if self._init(case):
                    outcomes = app.BatchTransform().transform_batch([_event(case)])
                    self.assertEqual(len(outcomes), 1)
                    self._check(case, outcomes[0])

    def test_default_cases_as_one_batch(self) -> None:
        picked = [c for c in CASES["cases"] if "config" not in c and "configRaw" not in c]
        self.assertGreater(len(picked), 10)
        app.BatchTransform().init(b"{}")
        outcomes = app.BatchTransform().transform_batch([_event(c) for c in picked])
        self.assertEqual(len(outcomes), len(picked))
        for case, outcome in zip(picked, outcomes):
            with self.subTest(case["name"]):
                self._check(case, outcome)

    def _init(self, case: dict) -> bool:
        x = case["expect"]
        config = _bytes_of(case, "config")
        try:
            app.BatchTransform().init(b"{}" if config is None else config)
            err = None
        except Err as e:
            err = e.value
        if "initError" in x:
            self.assertIsInstance(err, TAGS[x["initError"]])
            self.assertIn(x["messageContains"], err.value.message)
            return False
        self.assertIsNone(err)
        return True

    def _check(self, case: dict, o: O.Outcome) -> None:
        x = case["expect"]
        given = _event(case)

        def kept_fields(out: types.Event) -> None:
            for field in ("resource", "action", "timestamp", "source", "sequence", "metadata"):
                self.assertEqual(getattr(out, field), getattr(given, field), field)

        if "failed" in x:
            self.assertIsInstance(o, O.Outcome_Failed)
            self.assertIsInstance(o.value, TAGS[x["failed"]])
            self.assertEqual(o.value.value.code, x["code"])
            return
        self.assertNotIsInstance(o, O.Outcome_Failed)
        if x.get("skip"):
            self.assertIsInstance(o, O.Outcome_Skip)
            return
        if "many" in x:
            self.assertIsInstance(o, O.Outcome_Many)
            self.assertEqual([e.id for e in o.value], x["many"])
            for e in o.value:
                kept_fields(e)
                self.assertEqual(json.loads(e.data), x["data"])
            return
        if x.get("unchanged"):
            self.assertIsInstance(o, O.Outcome_Keep)
            return
        # A changed record comes back as its new documents only; `before` None: unchanged.
        self.assertIsInstance(o, O.Outcome_Update)
        self.assertEqual(json.loads(o.value.data.decode("utf-8")), x["data"])
        before = o.value.before if o.value.before is not None else given.before
        if "before" in x:
            self.assertEqual(json.loads(before.decode("utf-8")), x["before"])
        else:
            self.assertEqual(before, given.before)


class Details(unittest.TestCase):
    def setUp(self) -> None:
        app.BatchTransform().init(b"{}")

    def test_hashlib_sha256_vector(self) -> None:
        self.assertEqual(
            hashlib.sha256(b"abc").hexdigest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )

    def test_normalize_email_trims_like_rust(self) -> None:
        self.assertEqual(app.normalize_email("\u3000\u0085 A@B.C\t\u2029"), "a@b.c")
        self.assertEqual(app.normalize_email("\x1ca@b.c"), "\x1ca@b.c")  # str.strip() would remove it

    def test_output_is_compact_utf8_json(self) -> None:
        [o] = app.BatchTransform().transform_batch([_event_of('{"name": "Zoë"}'.encode())])
        self.assertEqual(o.value.data, '{"name":"Zoë"}'.encode())

    def test_big_integers_survive(self) -> None:
        [o] = app.BatchTransform().transform_batch([_event_of(b'{"n": 123456789012345678901234567890}')])
        self.assertEqual(o.value.data, b'{"n":123456789012345678901234567890}')

    def test_fan_out_is_integer_only(self) -> None:
        [o] = app.BatchTransform().transform_batch([_event_of(b'{"fanOut": 2.0}')])
        self.assertIsInstance(o, O.Outcome_Update)  # no fan-out, as serde_json's as_u64 (JavaScript cannot tell 2.0 from 2)

    def test_empty_batch(self) -> None:
        self.assertEqual(app.BatchTransform().transform_batch([]), [])

    def test_logs(self) -> None:
        LOGGED.clear()
        plugin = app.BatchTransform()
        plugin.init(b"{}")
        plugin.transform_batch([_event_of(b'{"deleted": true}'), _event_of(b"{"), _event_of(b"{}")])
        self.assertEqual(LOGGED, [(log.Level.INFO, "python-transform: config accepted")])

    def test_unexpected_exception_fails_that_record_only(self) -> None:
        outcomes = app.BatchTransform().transform_batch([None, _event_of(b"{}")])  # type: ignore[list-item]
        self.assertIsInstance(outcomes[0], O.Outcome_Failed)
        self.assertIsInstance(outcomes[0].value, transform_types.TransformError_Other)
        self.assertEqual(outcomes[0].value.value.code, "exception")
        self.assertIsInstance(outcomes[1], O.Outcome_Update)


if __name__ == "__main__":
    unittest.main()
