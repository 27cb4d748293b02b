"""Plain-Python tests of app.py (no wasm): python3 test_app.py  (or: python3 -m unittest test_app)

app.py imports the bindings componentize-py generates (`wit_world`, `componentize_py_types`);
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
    wit_text = (WIT / "plugin.wit").read_text(encoding="utf-8")
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wit_text:
        return
    shutil.rmtree(GEN, ignore_errors=True)
    subprocess.run(
        [_componentize_py(), "-d", str(WIT), "-w", "record-transformer", "bindings", str(GEN)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    stamp.write_text(wit_text, encoding="utf-8")


_ensure_bindings()
sys.path[:0] = [str(GEN), str(HERE)]

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


class SharedCases(unittest.TestCase):
    def test_cases(self) -> None:
        for case in CASES["cases"]:
            with self.subTest(case["name"]):
                self._run(case)

    def _run(self, case: dict) -> None:
        x = case["expect"]
        plugin = app.RecordTransform()
        config = _bytes_of(case, "config")
        try:
            plugin.init(b"{}" if config is None else config)
            init_err = None
        except Err as e:
            init_err = e.value
        if "initError" in x:
            self.assertIsInstance(init_err, TAGS[x["initError"]])
            self.assertEqual(init_err.value.code, x["code"])
            self.assertIn(x["messageContains"], init_err.value.message)
            return
        self.assertIsNone(init_err)

        given = _event(case)
        try:
            out, err = plugin.transform(_event(case)), None
        except Err as e:
            out, err = None, e.value
        if "error" in x:
            self.assertIsInstance(err, TAGS[x["error"]])
            self.assertEqual(err.value.code, x["code"])
            return
        self.assertIsNone(err)
        if x.get("skip"):
            self.assertIsNone(out)
            return
        self.assertIsInstance(out, types.Event)
        for field in ("resource", "action", "id", "before", "timestamp", "source", "sequence", "metadata"):
            self.assertEqual(getattr(out, field), getattr(given, field), field)
        if x.get("unchanged"):
            self.assertEqual(out.data, given.data)
            return
        self.assertEqual(json.loads(out.data.decode("utf-8")), x["data"])


class Details(unittest.TestCase):
    def setUp(self) -> None:
        app.RecordTransform().init(b"{}")

    def test_hashlib_sha256_vector(self) -> None:
        self.assertEqual(
            hashlib.sha256(b"abc").hexdigest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        self.assertEqual(app.email_hash(" ABC\t"), hashlib.sha256(b"abc").hexdigest())

    def test_output_is_compact_utf8_json(self) -> None:
        ev = types.Event("users", types.Action.INSERT, "1", '{"name": "Zoë"}'.encode(), None, "t", None, 1, None)
        out = app.RecordTransform().transform(ev)
        self.assertEqual(out.data, '{"name":"Zoë"}'.encode())

    def test_big_integers_survive(self) -> None:
        ev = types.Event("users", types.Action.INSERT, "1", b'{"n": 12345678901234567890}', None, "t", None, 1, None)
        out = app.RecordTransform().transform(ev)
        self.assertEqual(out.data, b'{"n":12345678901234567890}')

    def test_logs(self) -> None:
        LOGGED.clear()
        plugin = app.RecordTransform()
        plugin.init(b"{}")
        plugin.transform(types.Event("users", types.Action.UPDATE, "u9", b'{"deleted": true}', None, "t", None, 1, None))
        self.assertTrue(any(l == log.Level.INFO and "python-transform ready" in m for l, m in LOGGED))
        self.assertTrue(any(l == log.Level.DEBUG and "users/u9" in m for l, m in LOGGED))

    def test_unexpected_exception_becomes_other(self) -> None:
        with self.assertRaises(Err) as ctx:
            app.RecordTransform().transform(None)  # type: ignore[arg-type]
        self.assertIsInstance(ctx.exception.value, transform_types.TransformError_Other)
        self.assertEqual(ctx.exception.value.value.code, "internal")


if __name__ == "__main__":
    unittest.main()
