"""The bridge's measurements: Prometheus metrics in its own registry, and a short window of recent requests.

One ``BridgeMetrics`` is created per server and handed to every front end. Front ends wrap each encode request in
``track(frontend, num_sentences, model)`` and report how it ended; the service core measures the times and token
counts that go with a success (``EncodeResult``). Every series is labelled with the front end and the model; a request
refused before a model was chosen (a malformed body, an unknown model name) has the model label "". The recent-request window feeds the dashboard (``activity()``): requests and
sentences per second and latency percentiles, which Prometheus histograms only approximate.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import Counter as Tally
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["BridgeMetrics", "RequestTracker", "FRONTENDS", "CONTENT_TYPE_LATEST"]

FRONTENDS = ("zmq", "http", "openai")
SUCCESS, ERROR = "success", "error"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
# The dashboard's window: per-second rates over the last ACTIVITY_WINDOW_S, percentiles over the last minute.
ACTIVITY_WINDOW_S = 600
LATENCY_WINDOW_S = 60
MAX_RECENT = 200_000  # bounds memory under heavy load; at that rate the window is shorter than ten minutes anyway


@dataclass(frozen=True)
class _Finished:
    at: float
    frontend: str
    sentences: int
    duration_s: float
    ok: bool


class RequestTracker:
    """One request in flight; say how it ended with ``succeeded(result)`` or ``failed(kind)``."""

    def __init__(self, metrics: BridgeMetrics, frontend: str, num_sentences: int, model: str):
        self._metrics = metrics
        self.frontend = frontend
        self.model = model
        self.num_sentences = num_sentences
        self.started = metrics.clock()
        self.outcome: Optional[str] = None

    def succeeded(self, result) -> None:
        """result: the service's EncodeResult (its times and token counts are recorded)."""
        self._finish(SUCCESS)
        metrics, labels = self._metrics, (self.frontend, self.model)
        metrics.tokens.labels(*labels).inc(result.num_tokens)
        metrics.truncated.labels(*labels).inc(result.truncated)
        metrics.tokenization_seconds.labels(*labels).observe(result.tokenization_s)
        metrics.inference_seconds.labels(*labels).observe(result.inference_s)

    def failed(self, kind: str) -> None:
        """kind: the error's type (BridgeError.kind, or InternalError)."""
        self._finish(ERROR)
        self._metrics.errors.labels(self.frontend, self.model, kind).inc()
        self._metrics.error_tally[kind] += 1

    def _finish(self, outcome: str) -> None:
        if self.outcome is not None:
            raise RuntimeError(f"request already finished as {self.outcome}")
        self.outcome = outcome
        metrics, label = self._metrics, self.frontend
        now = metrics.clock()
        duration_s = now - self.started
        metrics.requests.labels(label, self.model, outcome).inc()
        metrics.sentences.labels(label, self.model, outcome).inc(self.num_sentences)
        metrics.request_duration_seconds.labels(label, self.model).observe(duration_s)
        metrics.request_tally[(label, outcome)] += 1
        metrics.model_tally[(self.model, outcome)] += 1
        metrics.recent.append(_Finished(now, label, self.num_sentences, duration_s, outcome == SUCCESS))


class BridgeMetrics:
    """Not thread-safe: updated and read on the bridge's event loop only."""

    def __init__(self, *, models: Sequence[str] = (), clock=time.monotonic):
        self.clock = clock
        self.models = tuple(models)
        self.started = clock()
        self.started_at_epoch_s = time.time()
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        by_request = ["frontend", "model"]
        self.requests = Counter("bert_requests", "Encode requests finished, by front end, model and outcome",
                                ["frontend", "model", "outcome"], registry=registry)
        self.sentences = Counter("bert_sentences", "Sentences in finished encode requests, by front end, model and "
                                 "outcome", ["frontend", "model", "outcome"], registry=registry)
        self.tokens = Counter("bert_tokens", "Tokens the model saw ([CLS]/[SEP] included, padding excluded)",
                              by_request, registry=registry)
        self.truncated = Counter("bert_truncated_inputs", "Inputs longer than the model reads, cut to its "
                                 "max_seq_len", by_request, registry=registry)
        self.errors = Counter("bert_errors", "Failed encode requests by front end, model and error type",
                              ["frontend", "model", "type"], registry=registry)
        self.request_sentences = Histogram("bert_request_sentences", "Sentences per encode request", by_request,
                                           buckets=SIZE_BUCKETS, registry=registry)
        self.tokenization_seconds = Histogram("bert_tokenization_seconds", "Time spent tokenizing a request",
                                              by_request, buckets=LATENCY_BUCKETS_S, registry=registry)
        self.inference_seconds = Histogram("bert_inference_seconds",
                                           "Time from a request's first Triton call to its last answer",
                                           by_request, buckets=LATENCY_BUCKETS_S, registry=registry)
        self.request_duration_seconds = Histogram("bert_request_duration_seconds",
                                                  "Time from receiving an encode request to its outcome",
                                                  by_request, buckets=LATENCY_BUCKETS_S, registry=registry)
        self.in_flight = Gauge("bert_requests_in_flight", "Encode requests being served", by_request,
                               registry=registry)
        for frontend in FRONTENDS:  # every series exists from the start, at zero
            for model in self.models:
                for outcome in (SUCCESS, ERROR):
                    self.requests.labels(frontend, model, outcome)
                    self.sentences.labels(frontend, model, outcome)
                for metric in (self.tokens, self.truncated, self.request_sentences, self.tokenization_seconds,
                               self.inference_seconds, self.request_duration_seconds, self.in_flight):
                    metric.labels(frontend, model)
        self.request_tally: Tally = Tally()  # (frontend, outcome) -> count, for the dashboard
        self.model_tally: Tally = Tally()  # (model, outcome) -> count
        self.error_tally: Tally = Tally()  # error type -> count
        self.in_flight_tally: Tally = Tally()  # frontend -> requests being served
        self.recent: deque[_Finished] = deque(maxlen=MAX_RECENT)

    @contextlib.contextmanager
    def track(self, frontend: str, num_sentences: int, model: str) -> Iterator[RequestTracker]:
        """Count one encode request for ``model``; a request that ends without succeeded()/failed() counts as
        Cancelled."""
        tracker = RequestTracker(self, frontend, num_sentences, model)
        self.request_sentences.labels(frontend, model).observe(num_sentences)
        gauge = self.in_flight.labels(frontend, model)
        gauge.inc()
        self.in_flight_tally[frontend] += 1
        try:
            yield tracker
        finally:
            gauge.dec()
            self.in_flight_tally[frontend] -= 1
            if tracker.outcome is None:
                tracker.failed("Cancelled")

    def rejected(self, frontend: str, kind: str, model: str = "") -> None:
        """A request refused before its sentences could be read (a malformed body), or before a model was chosen
        (model ""): counted as an error only."""
        self.requests.labels(frontend, model, ERROR).inc()
        self.errors.labels(frontend, model, kind).inc()
        self.request_tally[(frontend, ERROR)] += 1
        self.model_tally[(model, ERROR)] += 1
        self.error_tally[kind] += 1

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def activity(self, *, bucket_s: int = 5) -> dict:
        """What the dashboard draws: per-bucket rates over the last ten minutes (oldest first), latency
        percentiles of the last minute, totals by front end and errors by type."""
        now = self.clock()
        while self.recent and now - self.recent[0].at > ACTIVITY_WINDOW_S:
            self.recent.popleft()
        num_buckets = ACTIVITY_WINDOW_S // bucket_s
        requests, sentences, errors = ([0] * num_buckets for _ in range(3))
        latencies = []
        for done in self.recent:
            age = now - done.at
            index = num_buckets - 1 - int(age // bucket_s)
            if 0 <= index < num_buckets:
                requests[index] += 1
                sentences[index] += done.sentences
                errors[index] += not done.ok
            if age <= LATENCY_WINDOW_S and done.ok:
                latencies.append(done.duration_s)
        latencies.sort()
        return {
            "uptime_s": now - self.started,
            "bucket_s": bucket_s,
            "series": {
                "seconds_ago": [(num_buckets - i) * bucket_s for i in range(num_buckets)],
                "requests_per_s": [n / bucket_s for n in requests],
                "sentences_per_s": [n / bucket_s for n in sentences],
                "errors_per_s": [n / bucket_s for n in errors],
            },
            "latency_ms": {
                "window_s": LATENCY_WINDOW_S,
                "count": len(latencies),
                **{f"p{q}": _percentile(latencies, q / 100) * 1000 if latencies else None for q in (50, 90, 99)},
            },
            "requests": {frontend: {outcome: self.request_tally[(frontend, outcome)] for outcome in (SUCCESS, ERROR)}
                         for frontend in FRONTENDS},
            "in_flight": {frontend: self.in_flight_tally[frontend] for frontend in FRONTENDS},
            "models": {model: {outcome: self.model_tally[(model, outcome)] for outcome in (SUCCESS, ERROR)}
                       for model in self.models},
            "errors": dict(self.error_tally),
        }


def _percentile(ordered: list, q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
