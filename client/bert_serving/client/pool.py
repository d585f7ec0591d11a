"""ConcurrentBertClient: a thread-safe pool of BertClients, one borrowed per call (zmq sockets are single-threaded).

Clients are created on demand up to ``max_concurrency``; a call that finds them all busy waits for one to come back
(at most ``timeout`` ms when one is set) instead of failing at once as 1.10 did.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, Iterator

from .bert_client import BertClient
from .errors import BertTimeoutError, ClientClosedError, InputValueError

__all__ = ["ConcurrentBertClient"]


class ConcurrentBertClient:
    """A thread-safe client: ``encode``, ``server_config``, ``server_status`` and ``status`` from any thread.

    :param max_concurrency: the most clients (connections) open at once, hence calls served at once
    :param kwargs: passed to every BertClient. A given ``identity`` gets a ``#n`` suffix per client: clients sharing
        one identity would receive each other's replies.
    """

    def __init__(self, max_concurrency: int = 10, **kwargs: Any):
        if max_concurrency < 1:
            raise InputValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self._kwargs = kwargs
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._lock = threading.Lock()
        self._num_clients = 1
        self._closed = False
        # The first client now, so a wrong address or version fails here, as it did in 1.10.
        self._idle.put(self._new_client(index=0))

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        """BertClient.encode on a free client; blocking only (a pooled client cannot be fetched from later)."""
        if not kwargs.get("blocking", True) or (len(args) > 1 and not args[1]):
            raise InputValueError("ConcurrentBertClient.encode is blocking only: use a BertClient for blocking=False")
        with self._borrow() as client:
            return client.encode(*args, **kwargs)

    @property
    def server_config(self) -> dict:
        with self._borrow() as client:
            return client.server_config

    @property
    def server_status(self) -> dict:
        with self._borrow() as client:
            return client.server_status

    @property
    def status(self) -> dict:
        """The status of one of the pooled clients."""
        with self._borrow() as client:
            return client.status

    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError('async encoding is not available on ConcurrentBertClient: use a BertClient')

    def fetch_all(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError('async encoding is not available on ConcurrentBertClient: use a BertClient')

    def encode_async(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError('async encoding is not available on ConcurrentBertClient: use a BertClient')

    def close(self) -> None:
        """Close every idle client; clients in use are closed as they come back."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:
                self._idle.get_nowait().close()

    def __enter__(self) -> ConcurrentBertClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[BertClient]:
        client = self._take()
        try:
            yield client
        finally:
            with self._lock:
                closed = self._closed
            if closed:
                client.close()
            else:
                self._idle.put(client)

    def _take(self) -> BertClient:
        if self._closed:
            raise ClientClosedError("this ConcurrentBertClient is closed")
        with contextlib.suppress(queue.Empty):
            return self._idle.get_nowait()
        with self._lock:
            index = self._num_clients if self._num_clients < self.max_concurrency else None
            if index is not None:
                self._num_clients += 1  # reserved now: the slow constructor runs outside the lock
        if index is not None:
            return self._new_client(index=index)
        timeout_ms = self._kwargs.get("timeout", -1)
        wait_s = None if timeout_ms is None or timeout_ms < 0 else timeout_ms / 1000
        try:
            return self._idle.get(timeout=wait_s)
        except queue.Empty:
            raise BertTimeoutError(f"all {self.max_concurrency} clients stayed busy for timeout={timeout_ms} ms; "
                                   "raise max_concurrency", timeout_ms=timeout_ms) from None

    def _new_client(self, *, index: int) -> BertClient:
        kwargs = dict(self._kwargs)
        identity = kwargs.get("identity")
        if identity:
            suffix = f"#{index}"
            kwargs["identity"] = identity + (suffix.encode() if isinstance(identity, bytes) else suffix)
        try:
            return BertClient(**kwargs)
        except BaseException:
            with self._lock:
                self._num_clients -= 1
            raise
