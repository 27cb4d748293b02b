"""{{name}}: a replicator driver that POSTs each batch to a URL, as a JSON array of events.

Config: `{"url": "https://hooks.example.com/in", "headers": {"authorization": "Bearer ..."}}`
(`url` required, http or https; `headers` optional). Each element of the body is an event:
`resource`, `action`, `id`, `data`, `before`, `timestamp`, `source`, `sequence`, `metadata`, its
documents as JSON values. The answer decides:
- 2xx: every event was written;
- 401, 403: `unauthorized`;
- 408, 429, 5xx, or no answer (network): `retryable`, not before `Retry-After` seconds;
- any other 4xx: `rejected`, the whole batch.

Writes are idempotent when the receiver drops an event whose `resource`, `id` and `sequence` it
has seen. The request goes through wasi:http (the SDK's `http_request`), so only to the hosts the
replicator's `allowHosts` lets through. The SDK (sdk/replicator_plugin.py, documented at its top)
exports `driver` from `define_driver`.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from replicator_plugin import (
    DriverInfo,
    Event,
    HttpError,
    InvalidConfig,
    PluginError,
    Rejected,
    Retryable,
    Unauthorized,
    debug,
    define_driver,
    events_to_json,
    http_request,
)

CONFIG_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "{{name}} driver config",
    "type": "object",
    "additionalProperties": False,
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "pattern": "^https?://", "description": "Where each batch is POSTed."},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Sent with every request (e.g. authorization).",
        },
    },
}

# An HTTP header name (RFC 9110 token); a URL with a scheme and a host.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_URL = re.compile(r"^(https?)://[^/?#\s]+", re.IGNORECASE)


def parse_config(config: Any) -> Dict[str, Any]:
    """The config as `replicate` uses it; raises InvalidConfig naming the key at fault."""
    if not isinstance(config, dict):
        raise InvalidConfig("the config must be a JSON object")
    url: Optional[str] = None
    headers: Dict[str, str] = {}
    for key, value in config.items():
        if key == "url":
            if not isinstance(value, str):
                raise InvalidConfig("`url` must be a string")
            url = value
        elif key == "headers":
            if not isinstance(value, dict):
                raise InvalidConfig("`headers` must be an object")
            for name, v in value.items():
                if not _TOKEN.match(name) or not isinstance(v, str) or any(c in v for c in "\r\n\0"):
                    raise InvalidConfig(f"`headers.{name}`: a header needs a valid name and a string value")
                headers[name.lower()] = v
        else:
            raise InvalidConfig(f"unknown config key `{key}`")
    if url is None:
        raise InvalidConfig("`url` is required")
    if not _URL.match(url):
        raise InvalidConfig("`url` must be an http:// or https:// URL")
    return {"url": url, "headers": headers}


def retry_after_ms(value: Optional[str]) -> Optional[int]:
    """`Retry-After` in seconds (the HTTP-date form is not honoured), in milliseconds."""
    return int(value.strip()) * 1000 if value is not None and value.strip().isdigit() else None


def verdict(status: int, retry_after: Optional[str], message: str) -> Optional[PluginError]:
    """What an answer with `status` means for the batch: None (written) or the error to raise."""
    code = f"http-{status}"
    if 200 <= status < 300:
        return None
    if status in (401, 403):
        return Unauthorized(message, code)
    if status in (408, 429) or 500 <= status < 600:
        return Retryable(message, code, retry_after_ms(retry_after))
    if 400 <= status < 500:
        return Rejected(message, code)
    # 1xx, 3xx: not an answer about the events; try again.
    return Retryable(message, code)


class HttpPost:
    describe = DriverInfo(name="{{name}}", version="0.1.0", config_schema=CONFIG_SCHEMA, max_batch_size=100, idempotent=True)

    def init(self, config: Any) -> None:
        self.config = parse_config(config)

    def replicate(self, events: List[Event]) -> list:
        url = self.config["url"]
        headers = [("content-type", "application/json"), *self.config["headers"].items()]
        try:
            response = http_request("POST", url, headers, events_to_json(events))
        except HttpError as e:
            raise Retryable(str(e), "network") from None
        debug(f"{{name}}: POST {url}: {len(events)} events, HTTP {response.status}")
        text = response.body.decode("utf-8", "replace").strip()[:200]
        error = verdict(response.status, response.header("retry-after"), f"POST {url}: HTTP {response.status}: {text}")
        if error is not None:
            raise error
        return []


Driver = define_driver(HttpPost())
