"""HTTPBertClient: BertClient's encode API over the server's HTTP API (POST /encode), for networks where the two
ZeroMQ ports are blocked, and ``rerank`` and ``predict`` for models with a classification head (POST /rerank,
POST /predict). Standard library only (urllib), so the client still installs with numpy and pyzmq alone.

Start the server with ``-http_port`` (docs/HTTP.md). Each call is one or more synchronous POSTs; a list longer than
``batch_size`` is sent in consecutive chunks and put back together in order.
"""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._version import __version__
from .errors import BertClientError, BertTimeoutError, InputValueError, ServerError
from .inputs import check_texts

__all__ = ["HTTPBertClient"]

DEFAULT_HTTP_PORT = 8125  # the port the original's docs use for -http_port
DEFAULT_BATCH_SIZE = 1024
OUTPUT_FORMATS = ("ndarray", "list")


class HTTPBertClient:
    """A client of the server's HTTP API with BertClient's ``encode``. Thread-safe: every call is its own request.

    :param ip: the server's address
    :param port: the server's ``-http_port``
    :param output_fmt: ``'ndarray'`` or ``'list'``
    :param timeout: milliseconds to wait for a reply (-1: forever); BertTimeoutError after that
    :param api_key: sent as ``Authorization: Bearer <api_key>`` when the server was started with ``--api-key``
    :param url: the server's base URL instead of ip and port (e.g. ``https://host/bert`` behind a proxy)
    :param batch_size: the most sentences sent in one POST
    """

    def __init__(self, ip: str = "localhost", port: int = DEFAULT_HTTP_PORT, output_fmt: str = "ndarray",
                 timeout: int = -1, *, api_key: Optional[str] = None, url: Optional[str] = None,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        if output_fmt not in OUTPUT_FORMATS:
            raise InputValueError(f"output_fmt must be 'ndarray' or 'list', got {output_fmt!r}")
        if batch_size < 1:
            raise InputValueError(f"batch_size must be at least 1, got {batch_size}")
        self.url = (url or f"http://{ip}:{port}").rstrip("/")
        self.output_fmt = output_fmt
        self.timeout = timeout
        self.batch_size = batch_size
        self._api_key = api_key
        self._num_request = 0

    # -- BertClient's API -------------------------------------------------------------------------------------------

    def encode(self, texts: Sequence, is_tokenized: bool = False) -> Any:
        """Encode sentences (``list[str]``, ``'a ||| b'`` for a pair) or token lists (``is_tokenized=True``);
        an ndarray (or list of lists) with one row per sentence."""
        check_texts(texts, is_tokenized=is_tokenized)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            self._num_request += 1
            reply = self._call("POST", "/encode", {"id": self._num_request, "is_tokenized": is_tokenized,
                                                   "texts": list(texts[start:start + self.batch_size])})
            parts.append(reply["result"])
        rows = [row for part in parts for row in part]
        return rows if self.output_fmt == "list" else np.asarray(rows, dtype=np.float32)

    def rerank(self, query: str, documents: Sequence[str], *, top_n: Optional[int] = None, raw_scores: bool = False,
               return_documents: bool = False, truncate: bool = True, model: Optional[str] = None) -> List[dict]:
        """Rank ``documents`` for ``query`` with a rerank model (a cross-encoder): ``[{"index", "score"}]`` from the
        best document to the worst (``"text"`` too with ``return_documents``), at most ``top_n``. Scores are the
        model's own (its activation, sigmoid for a CrossEncoder), its logits with ``raw_scores``; a pair longer than
        the model reads is cut unless ``truncate`` is False (then the server refuses it). ``model``: a rerank model
        of the server's (default: its first)."""
        if not isinstance(query, str) or not query:
            raise InputValueError("query must be a non-empty string")
        if isinstance(documents, str) or not documents or not all(isinstance(d, str) and d for d in documents):
            raise InputValueError("documents must be a non-empty list of non-empty strings")
        if top_n is not None and top_n < 1:
            raise InputValueError(f"top_n must be at least 1, got {top_n}")
        ranks = []
        for start in range(0, len(documents), self.batch_size):
            self._num_request += 1
            body = {"query": query, "texts": list(documents[start:start + self.batch_size]), "raw_scores": raw_scores,
                    "return_text": return_documents, "truncate": truncate, **({"model": model} if model else {})}
            ranks += [{**rank, "index": rank["index"] + start} for rank in self._call("POST", "/rerank", body)]
        ranks.sort(key=lambda rank: (-rank["score"], rank["index"]))
        return ranks[:top_n]

    def predict(self, inputs: Sequence[Union[str, Tuple[str, str]]], *, raw_scores: bool = False,
                truncate: bool = True, model: Optional[str] = None) -> List[List[dict]]:
        """Scores per label of texts and ``(text, text)`` pairs with a rerank or classify model: one list per
        input, ``[{"label", "score"}]`` from the best label to the worst. Scores are the model's own (its
        activation), its logits with ``raw_scores``."""
        if isinstance(inputs, (str, tuple)) or not inputs:
            raise InputValueError("inputs must be a non-empty list of texts and (text, text) pairs")
        items = []
        for i, item in enumerate(inputs):
            parts = [item] if isinstance(item, str) else list(item) if isinstance(item, (tuple, list)) else None
            if parts is None or len(parts) not in (1, 2) or not all(isinstance(p, str) and p for p in parts):
                raise InputValueError(f"input {i} is neither a non-empty string nor a pair of them")
            items.append(parts)  # always a list: a bare pair of two strings would read as one input
        predictions = []
        for start in range(0, len(items), self.batch_size):
            self._num_request += 1
            body = {"inputs": items[start:start + self.batch_size], "raw_scores": raw_scores, "truncate": truncate,
                    **({"model": model} if model else {})}
            predictions += self._call("POST", "/predict", body)
        return predictions

    @property
    def server_status(self) -> dict:
        """The server's configuration and ``statistic`` (GET /status/server)."""
        return self._call("GET", "/status/server")

    @property
    def server_config(self) -> dict:
        """The server's configuration (GET /status/server without the ``statistic``)."""
        return {k: v for k, v in self.server_status.items() if k not in ("statistic", "status")}

    @property
    def status(self) -> dict:
        """This client's own state; nothing is sent."""
        return {"server_url": self.url, "num_request": self._num_request, "output_fmt": self.output_fmt,
                "timeout": self.timeout, "batch_size": self.batch_size, "client_version": __version__}

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own connection."""

    def __enter__(self) -> HTTPBertClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, timeout={self.timeout})"

    # -- HTTP -------------------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        timeout_s = None if self.timeout is None or self.timeout < 0 else self.timeout / 1000
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise _server_error(e) from e
        except (socket.timeout, TimeoutError) as e:
            raise BertTimeoutError(f"no reply from {self.url}{path} within {self.timeout} ms",
                                   timeout_ms=self.timeout) from e
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise BertTimeoutError(f"no reply from {self.url}{path} within {self.timeout} ms",
                                       timeout_ms=self.timeout) from e
            raise BertClientError(f"cannot reach {self.url}{path}: {e.reason}") from e


def _server_error(error: urllib.error.HTTPError) -> ServerError:
    """The server's error envelope ({"description", "type", "status"}) as ServerError; any other body as text."""
    text = error.read().decode("utf-8", "replace")
    try:
        body = json.loads(text)
        return ServerError(body["description"], error_type=body.get("type", f"HTTP {error.code}"))
    except (ValueError, KeyError, TypeError):
        return ServerError(f"HTTP {error.code}: {text[:200]}", error_type=f"HTTP {error.code}")
