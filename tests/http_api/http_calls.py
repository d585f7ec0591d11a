"""A plain HTTP client for the tests (urllib: a real client over a real socket), and the shared bridge's address."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Optional

from harness import RunningBridge


@dataclass
class HttpBridge:
    bridge: RunningBridge
    http_port: int
    api_key: Optional[str] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


def call(url: str, method: str = "GET", *, json_body: Any = None, data: Optional[bytes] = None,
         headers: Optional[dict] = None, timeout_s: float = 120) -> Reply:
    """One request; any status comes back as a Reply (urllib raises on >= 400, which we undo)."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers.setdefault("content-type", "application/json")
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())
