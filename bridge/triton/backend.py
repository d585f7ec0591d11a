"""Talks to Triton over gRPC (tritonclient.grpc.aio): the one place tritonclient's errors become ours."""
from __future__ import annotations

import asyncio
import logging
from typing import Optional

import numpy as np

from bert_exporter.manifest import INPUT_NAMES, OUTPUT_NAME

from ..errors import BackendError, BackendOverloaded, BackendUnavailable

log = logging.getLogger("bert_bridge.triton")

# Replacing tritonclient's channel arguments drops its defaults, so the message limits are restated. The short
# reconnect backoff lets the bridge find a restarted Triton within about a second instead of gRPC's default of
# up to two minutes (the minimum backoff is also gRPC's connect timeout, so a connection attempt into a network
# partition is given up and retried quickly). A local subchannel pool gives every TritonBackend a TCP connection of
# its own: gRPC would otherwise share one among channels to the same address, and the pool replaces an endpoint's
# channel precisely to leave a connection stuck in a partition behind (triton/pool.py).
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.use_local_subchannel_pool", 1),
]
DESCRIBE_TIMEOUT_S = 10.0

# gRPC status codes that mean "Triton is not there right now" rather than "this request is wrong".
UNAVAILABLE_CODES = ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED")


def _translate(error: Exception, url: str, model_name: str, timeout_s: float = 0) -> Exception:
    status = str(getattr(error, "status", lambda: "")() or "")
    message = getattr(error, "message", lambda: str(error))() or str(error)
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return BackendOverloaded(f"Triton at {url} did not answer within {timeout_s:g}s (overloaded or hung); "
                                 "try again, or raise --triton-timeout-s")
    if status in UNAVAILABLE_CODES or "failed to connect" in message.lower() or "connection refused" in message.lower():
        return BackendUnavailable(f"Triton at {url} is unavailable ({status or 'no connection'}): {message}")
    if "not ready" in message.lower() or "unknown model" in message.lower() or "not found" in message.lower():
        return BackendUnavailable(f"Triton at {url} does not serve a ready model '{model_name}': {message}")
    return BackendError(f"Triton rejected the request for model '{model_name}': {message}")


class TritonBackend:
    """One gRPC channel to Triton for one model. Create it inside the running event loop."""

    def __init__(self, *, url: str, model_name: str, timeout_s: float):
        from tritonclient.grpc import aio as grpcclient

        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url=url, channel_args=CHANNEL_ARGS)
        self._grpc = grpcclient
        self.details: dict = {}  # what describe() learned; empty until Triton first answered

    async def wait_until_ready(self, timeout_s: float) -> dict:
        """Wait for the model to be ready; returns what describe() learned. Raises BackendUnavailable."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        last_error: Optional[Exception] = None
        while asyncio.get_running_loop().time() < deadline:
            try:
                if await self._client.is_model_ready(self.model_name):
                    return await self.describe()
            except Exception as e:  # tritonclient raises its own exception type or grpc errors
                last_error = e
            await asyncio.sleep(0.5)
        reason = f": {_translate(last_error, self.url, self.model_name)}" if last_error else ""
        raise BackendUnavailable(f"model '{self.model_name}' at Triton {self.url} was not ready within "
                                 f"{timeout_s:.0f}s{reason}")

    async def check_ready(self, timeout_s: float = 2.0) -> None:
        """Return when Triton answers that the model is ready; otherwise raise BackendUnavailable with the reason, or
        BackendOverloaded when no answer came within ``timeout_s`` (the pool tells silence from refusal by it)."""
        try:
            ready = await self._client.is_model_ready(self.model_name, client_timeout=timeout_s)
        except Exception as e:
            error = _translate(e, self.url, self.model_name, timeout_s)
            if isinstance(error, BackendOverloaded):
                raise BackendOverloaded(f"Triton at {self.url} did not answer a health check within "
                                        f"{timeout_s:g}s") from e
            if isinstance(error, BackendUnavailable):
                raise error from e
            raise BackendUnavailable(f"Triton at {self.url} did not confirm model '{self.model_name}' is ready: "
                                     f"{error.message}") from e
        if not ready:
            raise BackendUnavailable(f"Triton at {self.url} reports model '{self.model_name}' as not ready")

    async def describe(self, timeout_s: float = DESCRIBE_TIMEOUT_S) -> dict:
        try:
            metadata = await self._client.get_server_metadata(as_json=True, client_timeout=timeout_s)
            config = await self._client.get_model_config(self.model_name, as_json=True, client_timeout=timeout_s)
        except Exception as e:
            raise _translate(e, self.url, self.model_name, timeout_s) from e
        config = config.get("config", config)
        self.details = {
            "url": self.url,
            "version": metadata.get("version"),
            "model": self.model_name,
            "backend": config.get("backend") or config.get("platform"),
            "max_batch_size": int(config.get("max_batch_size", 0)),
            "priority_levels": int(config.get("dynamic_batching", {}).get("priority_levels", 0) or 0),
            "instance_group": config.get("instance_group", []),
        }
        return self.details

    async def infer(self, input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray, *,
                    high_priority: bool) -> np.ndarray:
        inputs = []
        for name, array in zip(INPUT_NAMES, (input_ids, input_mask, segment_ids)):
            tensor = self._grpc.InferInput(name, list(array.shape), "INT32")
            tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.int32))
            inputs.append(tensor)
        if not self.details:  # Triton was down when we started: learn its model config now
            await self.describe()
        # Triton priority: 1 is the highest; the export sets default_priority_level 2 for everything else.
        priority = 1 if (high_priority and self.details["priority_levels"] >= 2) else 0
        try:
            result = await self._client.infer(self.model_name, inputs,
                                              outputs=[self._grpc.InferRequestedOutput(OUTPUT_NAME)],
                                              priority=priority, client_timeout=self.timeout_s)
        except Exception as e:
            raise _translate(e, self.url, self.model_name, self.timeout_s) from e
        return result.as_numpy(OUTPUT_NAME)

    async def close(self) -> None:
        try:
            await self._client.close()
        except Exception as e:  # closing a broken channel must not mask the shutdown
            log.debug("closing the Triton client: %s", e)
