"""BridgeMetrics alone: what a tracked request records, and the dashboard's activity window (a fake clock)."""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from bert_bridge.metrics import ACTIVITY_WINDOW_S, BridgeMetrics


@dataclass
class FakeResult:
    num_tokens: int = 12
    tokenization_s: float = 0.001
    inference_s: float = 0.02
    truncated: int = 1


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(metrics: BridgeMetrics) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.exposition().decode()) for s in family.samples}


def test_tracked_requests_are_counted_by_front_end_model_and_outcome():
    clock = Clock()
    metrics = BridgeMetrics(models=("bert", "st"), clock=clock)
    with metrics.track("http", 4, "bert") as tracker:
        clock.now += 0.5
        tracker.succeeded(FakeResult())
    with metrics.track("zmq", 2, "bert") as tracker:
        tracker.failed("BackendUnavailable")
    with metrics.track("openai", 3, "st"):
        pass  # ended without an outcome: a cancelled request
    metrics.rejected("openai", "ModelNotFound")  # no model was chosen
    values = samples(metrics)
    http, zmq, openai = ((("frontend", frontend), ("model", model)) for frontend, model in (
        ("http", "bert"), ("zmq", "bert"), ("openai", "st")))
    assert values[("bert_requests_total", (*http, ("outcome", "success")))] == 1
    assert values[("bert_sentences_total", (*http, ("outcome", "success")))] == 4
    assert values[("bert_tokens_total", http)] == 12
    assert values[("bert_truncated_inputs_total", http)] == 1
    assert values[("bert_request_duration_seconds_sum", http)] == 0.5
    assert values[("bert_errors_total", (*zmq, ("type", "BackendUnavailable")))] == 1
    assert values[("bert_errors_total", (*openai, ("type", "Cancelled")))] == 1
    assert values[("bert_errors_total", (("frontend", "openai"), ("model", ""), ("type", "ModelNotFound")))] == 1
    assert values[("bert_requests_in_flight", http)] == 0
    assert values[("bert_requests_total", (("frontend", "openai"), ("model", "bert"), ("outcome", "success")))] == 0
    activity = metrics.activity()
    assert activity["errors"] == {"BackendUnavailable": 1, "Cancelled": 1, "ModelNotFound": 1}
    assert activity["models"] == {"bert": {"success": 1, "error": 1}, "st": {"success": 0, "error": 1}}


def test_activity_rates_and_percentiles():
    clock = Clock()
    metrics = BridgeMetrics(models=("bert",), clock=clock)
    for i in range(100):
        with metrics.track("http", 10, "bert") as tracker:
            clock.now += 0.001 * (i + 1)  # durations 1 ms .. 100 ms
            tracker.succeeded(FakeResult())
    activity = metrics.activity(bucket_s=5)
    assert sum(activity["series"]["requests_per_s"]) * 5 == 100
    assert sum(activity["series"]["sentences_per_s"]) * 5 == 1000
    latency = activity["latency_ms"]
    assert latency["count"] == 100
    assert round(latency["p50"]) == 50 and round(latency["p90"]) == 90 and round(latency["p99"]) == 99
    assert activity["requests"]["http"] == {"success": 100, "error": 0}
    clock.now += ACTIVITY_WINDOW_S + 1  # everything ages out of the window, the totals stay
    later = metrics.activity()
    assert sum(later["series"]["requests_per_s"]) == 0 and later["latency_ms"]["p50"] is None
    assert later["requests"]["http"] == {"success": 100, "error": 0}
