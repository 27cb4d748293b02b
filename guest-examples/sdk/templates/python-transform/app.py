"""{{name}}: a replicator transform, driven by its config (every key optional)::

    {"drop": ["password"], "rename": {"mail": "email"}, "skipResources": ["audit"]}

- events of a resource in `skipResources` are skipped;
- deletes pass through unchanged;
- inserts and updates lose the `drop` fields, then get the `rename` fields renamed (replacing a
  field of the new name), in `data` and in `before`; a record with nothing to change is kept as
  it came;
- a record whose `data` or `before` is not a JSON object fails (`invalid-record`, code
  `not-an-object`), and only that record.

The SDK (sdk/replicator_plugin.py, documented at its top) exports `batch-transform` from
`define_transform`, hands `init` the config as a JSON value and `transform` one event at a time.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from replicator_plugin import Event, InvalidConfig, define_transform, fail, keep, skip, update


def _strings(key: str, value: Any) -> List[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InvalidConfig(f"`{key}` must be an array of strings")
    return value


class DropRename:
    def __init__(self) -> None:
        self.drop: List[str] = []
        self.rename: List[Tuple[str, str]] = []
        self.skip_resources: frozenset = frozenset()

    def init(self, config: Any) -> None:
        """Reads the config; raises InvalidConfig naming the key at fault."""
        if not isinstance(config, dict):
            raise InvalidConfig("the config must be a JSON object")
        drop, rename, skip_resources = [], [], []
        for key, value in config.items():
            if key == "drop":
                drop = _strings(key, value)
            elif key == "skipResources":
                skip_resources = _strings(key, value)
            elif key == "rename":
                if not isinstance(value, dict):
                    raise InvalidConfig("`rename` must be an object")
                for old, new in value.items():
                    if not isinstance(new, str):
                        raise InvalidConfig(f"`rename.{old}` must be a string")
                rename = list(value.items())
            else:
                raise InvalidConfig(f"unknown config key `{key}`")
        self.drop, self.rename, self.skip_resources = drop, rename, frozenset(skip_resources)

    def _shape(self, doc: dict) -> bool:
        """`drop` then `rename` on one document, in place; True when something changed."""
        changed = False
        for name in self.drop:
            if name in doc:
                del doc[name]
                changed = True
        for old, new in self.rename:
            if old in doc:
                value = doc.pop(old)
                doc[new] = value
                changed = True
        return changed

    def transform(self, event: Event) -> Any:
        if event.resource in self.skip_resources:
            return skip()
        if event.action == "delete":
            return keep()
        data, before = event.data, event.before  # parsed here, on first read
        if data is None:
            return keep()
        if not isinstance(data, dict):
            return fail("not-an-object", "`data` is not a JSON object")
        if before is not None and not isinstance(before, dict):
            return fail("not-an-object", "`before` is not a JSON object")
        data_changed = self._shape(data)
        before_changed = before is not None and self._shape(before)
        if not data_changed and not before_changed:
            return keep()
        # Only the documents that changed are sent back.
        return update(data=data if data_changed else None, before=before if before_changed else None)


BatchTransform = define_transform(DropRename())
