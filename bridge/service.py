"""The service core every front end calls: validate, tokenize, split, pad, infer on Triton, reassemble in order.

Triton's dynamic batcher merges only same-shape requests (DESIGN.md, decision 4), so every chunk is padded to
``max_seq_len`` -- or, with max_seq_len NONE, to a length bucket -- and requests above ``max_batch_size`` are split
into chunks sent concurrently and put back together in input order.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bert_exporter.manifest import PoolingStrategy

from .config import ServerConfig
from .errors import BridgeError
from .tokenization import Encoding, TokenizerSettings, WordPieceTokenizer, pad
from .triton_backend import TritonBackend

log = logging.getLogger("bert_bridge.service")

# Lengths a dynamic-length (NONE) batch is padded up to, so few distinct shapes reach Triton's batcher.
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 384, 512)
# Sentences queued in Triton at once, in multiples of max_batch_size: enough to keep its batcher full, few enough
# that a chunk never waits in Triton's queue past the call's deadline while a huge request is being served.
INFLIGHT_BATCHES = 4


class SentenceBudget:
    """At most ``limit`` sentences in flight; a chunk larger than the whole budget still goes alone."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self._changed = asyncio.Condition()

    async def acquire(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight == 0 or self.in_flight + count <= self.limit)
            self.in_flight += count

    async def release(self, count: int) -> None:
        async with self._changed:
            self.in_flight -= count
            self._changed.notify_all()


@dataclass(frozen=True)
class EncodeResult:
    embeddings: np.ndarray
    tokens: Any  # one token list per sentence, or "" when the server does not show tokens
    # Tokens the model saw per sentence: after truncation, [CLS]/[SEP] included, padding excluded.
    token_counts: tuple = ()
    tokenization_s: float = 0.0
    inference_s: float = 0.0  # from the first chunk sent to Triton to the last answer, queueing included
    total_s: float = 0.0

    @property
    def num_tokens(self) -> int:
        return sum(self.token_counts)


def bucket_length(longest: int, cap: int) -> int:
    for length in LENGTH_BUCKETS:
        if longest <= length:
            return min(length, cap)
    return cap


class EncodingService:
    def __init__(self, *, config: ServerConfig, vocab_file, max_position_embeddings: int, backend: TritonBackend,
                 tokenizer_file=None):
        self.config = config
        self.backend = backend
        self.max_position_embeddings = max_position_embeddings
        self.tokenizer = WordPieceTokenizer(TokenizerSettings(
            vocab_file=vocab_file,
            do_lower_case=config.do_lower_case,
            max_seq_len=config.max_seq_len,
            max_position_embeddings=max_position_embeddings,
            mask_cls_sep=config.mask_cls_sep,
            no_special_token=config.no_special_token,
            tokenizer_file=tokenizer_file,
        ))
        self._budget = SentenceBudget(INFLIGHT_BATCHES * config.max_batch_size)
        self._token_level = PoolingStrategy.parse(config.pooling_strategy) is PoolingStrategy.NONE

    async def encode(self, texts: Any) -> EncodeResult:
        """Sentences (list[str], 'a ||| b' for a pair) or token lists (list[list[str]])."""
        return await self._encode(self.tokenizer.encode, texts)

    async def encode_token_ids(self, token_ids: Any) -> EncodeResult:
        """Lists of the served model's vocabulary ids (the OpenAI API's token input); see encode_token_ids there."""
        return await self._encode(self.tokenizer.encode_token_ids, token_ids)

    async def _encode(self, tokenize: Callable[[Any], list[Encoding]], inputs: Any) -> EncodeResult:
        started = time.perf_counter()
        # The tokenizer validates the input (InvalidRequest). Tokenizing thousands of sentences takes milliseconds
        # of CPU: off the event loop all the same.
        encodings = await asyncio.get_running_loop().run_in_executor(None, tokenize, inputs)
        tokenized = time.perf_counter()
        high_priority = len(encodings) <= self.config.priority_batch_size
        size = self.config.max_batch_size
        chunks = [encodings[start:start + size] for start in range(0, len(encodings), size)]
        length = self._padded_length(encodings)
        parts = await asyncio.gather(*(self._infer(chunk, length, high_priority) for chunk in chunks))
        inferred = time.perf_counter()
        embeddings = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        if self._token_level:
            embeddings = self._fit_token_axis(embeddings, encodings)
        tokens = [e.tokens for e in encodings] if self.config.show_tokens_to_client else ""
        return EncodeResult(embeddings=embeddings, tokens=tokens,
                            token_counts=tuple(len(e.input_ids) for e in encodings),
                            tokenization_s=tokenized - started, inference_s=inferred - tokenized,
                            total_s=time.perf_counter() - started)

    def _padded_length(self, encodings: list[Encoding]) -> int:
        if self.config.max_seq_len is not None:
            return self.config.max_seq_len
        return bucket_length(max(len(e.input_ids) for e in encodings), self.max_position_embeddings)

    def _fit_token_axis(self, embeddings: np.ndarray, encodings: list[Encoding]) -> np.ndarray:
        """[B, T, D] with T as the original: max_seq_len, the longest sequence, or max_position_embeddings."""
        if self.config.max_seq_len is not None:
            target = self.config.max_seq_len
        elif self.config.fixed_embed_length:
            target = self.max_position_embeddings
        else:
            target = self.tokenizer.batch_length(encodings)  # the original's: longest content + special tokens
        if embeddings.shape[1] >= target:
            return embeddings[:, :target]
        padding = np.zeros((embeddings.shape[0], target - embeddings.shape[1], embeddings.shape[2]), embeddings.dtype)
        return np.concatenate([embeddings, padding], axis=1)

    async def _infer(self, chunk: list[Encoding], length: int, high_priority: bool) -> np.ndarray:
        input_ids, input_mask, segment_ids = pad(chunk, length)
        if high_priority:  # small by definition: straight to Triton's priority queue, never behind big chunks here
            return await self.backend.infer(input_ids, input_mask, segment_ids, high_priority=True)
        await self._budget.acquire(len(chunk))
        try:
            return await self.backend.infer(input_ids, input_mask, segment_ids, high_priority=False)
        finally:
            await self._budget.release(len(chunk))


def error_message(error: BaseException) -> tuple[str, str]:
    """(type, message) for a reply: our typed errors keep their message; anything else is an internal error."""
    if isinstance(error, BridgeError):
        return error.kind, error.message
    log.exception("internal error while serving a request", exc_info=error)
    return "InternalError", f"internal server error: {type(error).__name__}: {error}"

