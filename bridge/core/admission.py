"""Admission to the service core: the per-request limits, and the load all clients together may put on the bridge.

Used once, at the start of ``EncodingService``'s encode path, so the ZeroMQ and HTTP front ends share the same limits
and the same budget. A request over a per-request limit is refused (``RequestTooLarge``: 413 over HTTP); one that
would take the sentences or bytes in flight across all clients over their limit is refused at once (``ServerBusy``,
an ``Overloaded`` error: 429 over HTTP), never queued, so memory stays bounded under any load.

Replies count as bytes in flight too: the ZeroMQ front end holds a reply's bytes from the moment it is ready until
libzmq has let go of it (written to the client's connection, or its subscriber left). Replies that slow readers do not
read therefore fill the budget, and new requests are refused, instead of growing the bridge's memory.

Sizes: a sentence's characters are ``len`` of its text (of its tokens, summed, for tokenized input; token ids count one
each); its bytes are those of its UTF-8 form.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from ..config import ServerConfig
from ..errors import RequestTooLarge, ServerBusy

__all__ = ["Admission"]


class Admission:
    """Not thread-safe: used on the bridge's event loop only."""

    def __init__(self, config: ServerConfig):
        self.max_request_sentences = config.max_request_sentences
        self.max_sentence_chars = config.max_sentence_chars
        self.max_inflight_sentences = config.max_inflight_sentences
        self.max_inflight_bytes = config.max_inflight_bytes
        self.sentences_in_flight = 0
        self.bytes_in_flight = 0  # of requests being encoded, and of replies not yet handed to the network
        self._settle_replies: list[Callable[[], None]] = []

    @contextlib.contextmanager
    def admit(self, inputs: Any, *, unit: str = "sentences") -> Iterator[None]:
        """Refuse ``inputs`` over a limit, else count them in flight for the duration of the ``with`` block.

        Inputs of the wrong shape are measured as far as they can be; the tokenizer refuses them afterwards. A request
        arriving while nothing is in flight is never refused for load, so a request within the per-request limits
        always gets served eventually. ``unit`` names the inputs in a refusal (a rerank's are documents)."""
        sentences, size = self._measure(inputs, unit)
        for settle in self._settle_replies:
            settle()
        busy = self.sentences_in_flight or self.bytes_in_flight
        if busy and self.sentences_in_flight + sentences > self.max_inflight_sentences:
            raise ServerBusy(
                f"the server is busy: {self.sentences_in_flight} sentences of all clients are being encoded and this "
                f"request adds {sentences}, over the limit of {self.max_inflight_sentences} "
                f"(--max-inflight-sentences): retry later")
        if busy and self.bytes_in_flight + size > self.max_inflight_bytes:
            raise ServerBusy(
                f"the server is busy: {self.bytes_in_flight} bytes of requests being encoded and of replies not yet "
                f"read by their clients are held, and this request adds {size}, over the limit of "
                f"{self.max_inflight_bytes} (--max-inflight-bytes): retry later")
        self.sentences_in_flight += sentences
        self.bytes_in_flight += size
        try:
            yield
        finally:
            self.sentences_in_flight -= sentences
            self.bytes_in_flight -= size

    def watch_replies(self, settle: Callable[[], None]) -> None:
        """``settle()`` releases the replies sent since it last ran; called before every decision, so a reply the
        client has just read never refuses its next request."""
        self._settle_replies.append(settle)

    def hold_reply(self, size: int) -> None:
        """A reply of ``size`` bytes waits to be sent: it counts against --max-inflight-bytes until released."""
        self.bytes_in_flight += size

    def release_reply(self, size: int) -> None:
        self.bytes_in_flight -= size

    def _measure(self, inputs: Any, unit: str) -> tuple[int, int]:
        """(sentences, bytes) of a request; RequestTooLarge when it breaks a per-request limit. An explicit pair (a
        tuple: a rerank's query and document) is one sentence; each of its texts is held to --max-sentence-chars."""
        if not isinstance(inputs, list):
            return 0, 0
        if len(inputs) > self.max_request_sentences:
            raise RequestTooLarge(f"the request has {len(inputs)} {unit}; this server accepts at most "
                                  f"{self.max_request_sentences} per request (--max-request-sentences): split it")
        total = 0
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                chars, size = len(item), _utf8_length(item)
            elif isinstance(item, list):
                chars = sum(len(part) if isinstance(part, str) else 1 for part in item)
                size = sum(_utf8_length(part) if isinstance(part, str) else 8 for part in item)
            elif isinstance(item, tuple):
                texts = [part for part in item if isinstance(part, str)]
                chars, size = max(map(len, texts), default=0), sum(map(_utf8_length, texts))
            else:
                continue  # not a sentence: the tokenizer refuses it
            if chars > self.max_sentence_chars:
                raise RequestTooLarge(
                    f"{unit[:-1]} {i} has {chars} characters; this server accepts at most {self.max_sentence_chars} "
                    f"per {unit[:-1]} (--max-sentence-chars); the model reads only its first max_seq_len tokens anyway")
            total += size
        return len(inputs), total


def _utf8_length(text: str) -> int:
    # Lone surrogates are valid in JSON strings; count them as the 3 bytes they take in WTF-8.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
