"""The service core every front end calls: validate, tokenize, split, pad, infer on Triton, reassemble in order.

One ``EncodingService`` per served model (core/registry.py holds them by name). They share one fair scheduler -- so
clients take turns across models too -- and one admission, whose limits hold for all models together. A model exported
with a classification head gives scores (its logits through the activation its export recorded, scores.py); a rerank
is (query, document) pairs, encoded like sentences.

Length-adaptive padding (DESIGN.md, decision 4): ``max_seq_len`` only truncates. Within a request the sentences are
ordered by length and cut into chunks where padding costs least (chunking.py); each chunk is padded to its longest
sentence rounded up to a multiple of 4, the chunks are sent concurrently, and the rows go back in input order. Masked
pooling makes the padding invisible in the vectors.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional

import numpy as np

from .admission import Admission
from .chunking import CHUNK_POSITIONS, Chunk, plan_chunks
from ..config import BERT_AS_SERVICE, ModelSpec, ServerConfig
from ..errors import BridgeError, InvalidRequest, RequestTooLarge
from .scheduler import FairScheduler
from .scores import activate
from .tokenization import Encoding, TokenizerSettings, WordPieceTokenizer, pad
from ..triton.pool import TritonPool

log = logging.getLogger("bert_bridge.service")

# Sentences in flight to each Triton endpoint that is up (the scheduler's capacity is this times the endpoints up), in
# multiples of max_batch_size: enough to keep its instances busy (ten chunks of ~40-token sentences), few enough that
# an urgent or newly arrived chunk waits behind little work: Triton's queue has no priorities (scheduler.py states
# the bound) and a chunk never waits there past the call's deadline.
INFLIGHT_BATCHES = 1
# Token positions in flight to Triton at once, in chunks' worth (scheduler.py, "Long documents"): a few long documents
# at a time, never hundreds queued in Triton ahead of a newcomer; at most 16 chunks' worth of short sentences (256
# sentences of 64 tokens) when the sentence budget would allow more.
INFLIGHT_CHUNK_POSITIONS = 16


@dataclass(frozen=True)
class EncodeResult:
    embeddings: np.ndarray
    tokens: Any  # one token list per sentence, or "" when the server does not show tokens
    # Tokens the model saw per sentence: after truncation, [CLS]/[SEP] included, padding excluded.
    token_counts: tuple = ()
    tokenization_s: float = 0.0
    inference_s: float = 0.0  # from the first chunk sent to Triton to the last answer, queueing included
    total_s: float = 0.0
    truncated: int = 0  # inputs longer than the model reads, cut to its max_seq_len

    @property
    def num_tokens(self) -> int:
        return sum(self.token_counts)


def scheduler_capacity(models) -> int:
    """Sentences in flight to each Triton endpoint that is up, for all models together: INFLIGHT_BATCHES of the
    largest batch. N endpoints up keep N times that in flight (ModelRegistry.build)."""
    return INFLIGHT_BATCHES * max(model.max_batch_size for model in models)


class EncodingService:
    """Encodes for one model. ``scheduler`` and ``admission`` are shared by every model's service."""

    def __init__(self, *, config: ServerConfig, model: ModelSpec, backend: TritonPool, scheduler: FairScheduler,
                 admission: Admission):
        self.config = config
        self.model = model
        self.backend = backend
        self.tokenizer = WordPieceTokenizer(TokenizerSettings(
            vocab_file=model.vocab_file,
            do_lower_case=model.do_lower_case,
            max_seq_len=model.max_seq_len,
            max_position_embeddings=model.manifest.max_position_embeddings,
            mask_cls_sep=model.mask_cls_sep,
            no_special_token=config.no_special_token,
            tokenizer_file=model.tokenizer_file,
            template=model.template,
            pair_truncation=model.pair_truncation,
        ))
        self._scheduler = scheduler
        # At least two chunks fit in flight per endpoint, so Triton computes one while the bridge turns the other's
        # reply around: with one chunk of 25 in a -max_batch_size of 32, the service ran 28% slower than at 64.
        self._chunk_rows = max(1, INFLIGHT_BATCHES * model.max_batch_size // 2)
        self._calls: set[asyncio.Task] = set()  # Triton calls in flight, kept alive until they answer
        self.admission = admission  # shared with the ZeroMQ front end, which counts its unsent replies

    @property
    def name(self) -> str:
        return self.model.name

    async def encode(self, texts: Any, *, client: Optional[Hashable] = None, dimensions: Optional[int] = None,
                     raw_scores: bool = False) -> EncodeResult:
        """Sentences (list[str], 'a ||| b' for a pair) or token lists (list[list[str]]).

        ``client`` names who asked (a ZeroMQ identity, an HTTP peer): chunks are interleaved round-robin between
        clients, then between one client's requests (scheduler.py); None makes the request a client of its own.
        ``dimensions`` shortens the vectors (see check_dimensions). A classification head's model gives its scores
        ``[N, num_labels]`` (its logits with ``raw_scores``). Cancelling the calling task drops the chunks not yet
        sent to Triton."""
        return await self._admitted(self.tokenizer.encode, texts, client, dimensions, raw_scores=raw_scores)

    async def encode_texts(self, texts: Any, *, client: Optional[Hashable] = None,
                           dimensions: Optional[int] = None) -> EncodeResult:
        """Texts each encoded as one text, never a pair: OpenAI's embeddings API has no pairs, so a ' ||| ' in a text
        is text. A model served with its own (sentence-transformers) semantics takes each text as it is, exactly as
        ``SentenceTransformer.encode`` does; one served with bert-as-service semantics strips it, as the original
        strips its lines, so that a text gives the vector ``encode`` gives it."""
        tokenize = functools.partial(self._tokenize_texts, strip=self.model.semantics == BERT_AS_SERVICE)
        return await self._admitted(tokenize, texts, client, dimensions)

    async def encode_token_ids(self, token_ids: Any, *, client: Optional[Hashable] = None,
                               dimensions: Optional[int] = None) -> EncodeResult:
        """Lists of the served model's vocabulary ids (the OpenAI API's token input); see encode_token_ids there."""
        return await self._admitted(self.tokenizer.encode_token_ids, token_ids, client, dimensions)

    async def encode_pairs(self, pairs: list, *, client: Optional[Hashable] = None, truncate: bool = True,
                           raw_scores: bool = False, item: str = "input") -> EncodeResult:
        """Explicit texts and pairs: ``(text, None)`` or ``(first, second)``, taken as they are (tokenization.py
        encode_pairs). ``truncate`` False refuses an input longer than the model reads (RequestTooLarge) instead of
        cutting it; ``item`` names an input in errors and limits."""
        tokenize = functools.partial(self._tokenize_pairs, truncate=truncate, item=item)
        return await self._admitted(tokenize, pairs, client, None, raw_scores=raw_scores, unit=f"{item}s")

    async def rerank(self, query: Any, documents: Any, *, client: Optional[Hashable] = None, truncate: bool = True,
                     raw_scores: bool = False) -> EncodeResult:
        """A rerank model's score of each (query, document) pair, ``[N]`` in the documents' order (the result's
        ``embeddings``). Each pair goes through the same admission (a document counts as an input), chunking and
        scheduling as a sentence of an encode."""
        if not isinstance(query, str) or not query:
            raise InvalidRequest("query must be a non-empty string")
        if not isinstance(documents, list) or not documents:
            raise InvalidRequest("documents must be a non-empty list of texts")
        for i, document in enumerate(documents):
            if not isinstance(document, str) or not document:
                raise InvalidRequest(f"document {i} is not a non-empty string")
        if self.model.output_dim != 1:
            raise InvalidRequest(f"model '{self.name}' gives {self.model.output_dim} scores per pair, not one "
                                 "relevance score: it classifies (POST /predict)")
        result = await self.encode_pairs([(query, document) for document in documents], client=client,
                                         truncate=truncate, raw_scores=raw_scores, item="document")
        return dataclasses.replace(result, embeddings=result.embeddings[:, 0])

    def check_dimensions(self, dimensions: Optional[int]) -> None:
        """InvalidRequest unless the model can give vectors of ``dimensions`` (None: its own width): its width, or --
        for a model whose vectors are normalized -- fewer, the first ones renormalized (sentence-transformers'
        truncate_dim with normalize_embeddings, OpenAI's ``dimensions``). An unnormalized vector cut short would be
        another vector, not a shorter one of the same: refused."""
        width = self.model.output_dim
        if dimensions is None or dimensions == width:
            return
        can_shorten = self.model.normalize and not self.model.token_level
        if can_shorten and 1 <= dimensions < width:
            return
        available = f"dimensions={dimensions} is not available: model '{self.name}' returns {width} dimensions"
        if can_shorten:
            raise InvalidRequest(f"{available}, and can shorten them to 1 to {width - 1}")
        raise InvalidRequest(f"{available}; only a model whose vectors are normalized can shorten them (an export "
                             "with -normalize, or a sentence-transformers model with -pooling_strategy AUTO)")

    def _tokenize_texts(self, texts: Any, *, strip: bool) -> list[Encoding]:
        if not isinstance(texts, list):
            raise InvalidRequest(f"expected a list of texts, not {type(texts).__name__}")
        return self.tokenizer.encode_pairs([(text, None) for text in texts], strip=strip)

    def _tokenize_pairs(self, pairs: list, *, truncate: bool, item: str) -> list[Encoding]:
        encodings = self.tokenizer.encode_pairs(pairs)
        cut = [i for i, encoding in enumerate(encodings) if encoding.truncated]
        if cut and not truncate:
            which = f"{item} {cut[0]}" + (f" (and {len(cut) - 1} more)" if len(cut) > 1 else "")
            raise RequestTooLarge(f"{which} is longer than the {self.model.max_tokens} tokens model '{self.name}' "
                                  "reads: send \"truncate\": true to cut it to that length")
        return encodings

    async def _admitted(self, tokenize: Callable[[Any], list[Encoding]], inputs: Any, client: Optional[Hashable],
                        dimensions: Optional[int], *, raw_scores: bool = False,
                        unit: str = "sentences") -> EncodeResult:
        """Every encode, from either front end, passes the request limits and the load limits here first."""
        self.check_dimensions(dimensions)
        with self.admission.admit(inputs, unit=unit):
            result = await self._encode(tokenize, inputs, client)
        if self.model.activation is not None and not raw_scores:
            return dataclasses.replace(result, embeddings=activate(result.embeddings, self.model.activation))
        if dimensions is None or dimensions == self.model.output_dim:
            return result
        shortened = result.embeddings[:, :dimensions].astype(np.float32)
        # As torch's F.normalize, which sentence-transformers uses: never a division by zero.
        shortened /= np.maximum(np.linalg.norm(shortened, axis=1, keepdims=True), 1e-12)
        return dataclasses.replace(result, embeddings=shortened)

    async def _encode(self, tokenize: Callable[[Any], list[Encoding]], inputs: Any,
                      client: Optional[Hashable]) -> EncodeResult:
        started = time.perf_counter()
        # The tokenizer validates the input (InvalidRequest).
        encodings, order, plan = await asyncio.get_running_loop().run_in_executor(
            None, self._prepare, tokenize, inputs)
        tokenized = time.perf_counter()
        high_priority = len(encodings) <= self.model.priority_batch_size
        request = object()  # this request's turn among its client's requests
        turns = {"client": request if client is None else client, "request": request}
        sends = [asyncio.ensure_future(self._infer([encodings[i] for i in order[chunk.start:chunk.stop]],
                                                   chunk.length, high_priority, turns))
                 for chunk in plan]
        try:
            parts = await asyncio.gather(*sends)
        except BaseException:  # a chunk failed, or the caller gave up: the chunks not yet sent never will be
            for send in sends:
                send.cancel()
            raise
        inferred = time.perf_counter()
        if self.model.token_level:
            target = self._token_axis_length(encodings)
            parts = [self._fit_token_axis(part, target) for part in parts]
        sorted_rows = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        embeddings = np.empty_like(sorted_rows)
        embeddings[order] = sorted_rows
        tokens = [e.tokens for e in encodings] if self.config.show_tokens_to_client else ""
        return EncodeResult(embeddings=embeddings, tokens=tokens,
                            token_counts=tuple(len(e.input_ids) for e in encodings),
                            tokenization_s=tokenized - started, inference_s=inferred - tokenized,
                            total_s=time.perf_counter() - started, truncated=sum(e.truncated for e in encodings))

    def _prepare(self, tokenize: Callable[[Any], list[Encoding]],
                 inputs: Any) -> tuple[list[Encoding], list[int], list[Chunk]]:
        """Tokenized sentences, their order by length, and the chunks of that order. Tokenizing thousands of
        sentences and planning their chunks take milliseconds of CPU: this runs off the event loop."""
        encodings = tokenize(inputs)
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].input_ids))
        cap = self.model.max_tokens
        lengths = [cap] * len(order) if self.config.pad_to_max_seq_len else [len(encodings[i].input_ids) for i in order]
        return encodings, order, plan_chunks(lengths, cap=cap, max_rows=self._chunk_rows)

    def _token_axis_length(self, encodings: list[Encoding]) -> int:
        """T of [B, T, D] as the original: max_seq_len, max_position_embeddings, or the longest sequence."""
        if self.model.max_seq_len is not None:
            return self.model.max_seq_len
        if self.config.fixed_embed_length:
            return self.model.manifest.max_position_embeddings
        return self.tokenizer.batch_length(encodings)  # the original's: longest content + special tokens

    @staticmethod
    def _fit_token_axis(embeddings: np.ndarray, target: int) -> np.ndarray:
        """Cut or zero-pad the token axis of [B, T, D] to ``target``."""
        if embeddings.shape[1] >= target:
            return embeddings[:, :target]
        padding = np.zeros((embeddings.shape[0], target - embeddings.shape[1], embeddings.shape[2]), embeddings.dtype)
        return np.concatenate([embeddings, padding], axis=1)

    async def _infer(self, chunk: list[Encoding], length: int, high_priority: bool, turns: dict) -> np.ndarray:
        # Every chunk waits for its turn here (padded only then, so a huge request's waiting chunks cost no arrays);
        # a small request's (high_priority) chunks go first (scheduler.py).
        positions = len(chunk) * length
        await self._scheduler.acquire(sentences=len(chunk), positions=positions, urgent=high_priority, **turns)
        try:
            input_ids, input_mask, segment_ids = pad(chunk, length)
            call = asyncio.ensure_future(self.backend.infer(input_ids, input_mask, segment_ids,
                                                            high_priority=high_priority))
        except BaseException:
            self._scheduler.release(len(chunk), positions)
            raise
        self._calls.add(call)
        call.add_done_callback(lambda done: self._call_finished(done, len(chunk), positions))
        # A call in flight is never cancelled, only no longer awaited: cancelling calls in flight made the embedded
        # tritonserver (2.51) abort in its python backend in our test runs (and Triton's gRPC server had crashes on
        # client cancellation before 24.12: triton-inference-server/server#7368). The chunk keeps its slot until
        # Triton has answered, so the scheduler's capacity stays what Triton really has in hand.
        return await asyncio.shield(call)

    def _call_finished(self, call: asyncio.Task, sentences: int, positions: int) -> None:
        self._calls.discard(call)
        self._scheduler.release(sentences, positions)
        if not call.cancelled():
            call.exception()  # retrieved: a call nobody awaits any more must not log "exception never retrieved"


def error_message(error: BaseException) -> tuple[str, str]:
    """(type, message) for a reply: our typed errors keep their message; anything else is an internal error."""
    if isinstance(error, BridgeError):
        return error.kind, error.message
    log.exception("internal error while serving a request", exc_info=error)
    return "InternalError", f"internal server error: {type(error).__name__}: {error}"

