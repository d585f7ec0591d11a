"""/metrics (issue 8, Done when 3): prometheus_client's own parser reads it, and its counters and histograms move
with traffic from the ZeroMQ and the HTTP front ends by exactly what was sent."""
from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from http_calls import call

pytestmark = pytest.mark.slow


def scrape(bridge) -> dict:
    """{(sample name, frozenset(labels)): value} of every sample."""
    reply = call(f"{bridge.url}/metrics")
    assert reply.status == 200
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(reply.body.decode())
            for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    """The sum of the samples that have these labels (and any others: every model's, unless ``model`` is given)."""
    wanted = set(labels.items())
    return sum(v for (sample, sample_labels), v in samples.items() if sample == name and wanted <= sample_labels)


def delta(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_counters_and_histograms_move_with_both_front_ends(http_bridge, zmq_client):
    before = scrape(http_bridge)
    zmq_client.encode(["one", "two", "three"])
    zmq_client.encode(["four"])
    assert call(f"{http_bridge.url}/encode", "POST", json_body={"id": 1, "texts": ["five", "six"]}).status == 200
    assert call(f"{http_bridge.url}/v1/embeddings", "POST",
                json_body={"input": ["seven", "eight", "nine", "ten"], "model": "m"}).status == 200
    assert call(f"{http_bridge.url}/encode", "POST", json_body={"id": 2, "texts": "not a list"}).status == 422
    assert call(f"{http_bridge.url}/v1/embeddings", "POST",
                json_body={"input": [[99999999]], "model": "m"}).status == 422
    after = scrape(http_bridge)

    # The bad /encode body is refused before its sentences are known; the bad token id reaches the service and
    # fails there, so its time counts in the request duration of the openai front end.
    for frontend, requests, sentences, timed in (("zmq", 2, 4, 2), ("http", 1, 2, 1), ("openai", 1, 4, 2)):
        assert delta(before, after, "bert_requests_total", frontend=frontend, outcome="success") == requests
        assert delta(before, after, "bert_sentences_total", frontend=frontend, outcome="success") == sentences
        # Each of these one-word sentences is [CLS] word [SEP].
        assert delta(before, after, "bert_tokens_total", frontend=frontend) == 3 * sentences
        for histogram in ("bert_tokenization_seconds", "bert_inference_seconds"):
            assert delta(before, after, f"{histogram}_count", frontend=frontend) == requests, histogram
            assert delta(before, after, f"{histogram}_sum", frontend=frontend) > 0, histogram
        assert delta(before, after, "bert_request_duration_seconds_count", frontend=frontend) == timed
        assert delta(before, after, "bert_request_duration_seconds_sum", frontend=frontend) > 0
        assert value(after, "bert_requests_in_flight", frontend=frontend) == 0
    assert delta(before, after, "bert_request_sentences_count", frontend="zmq") == 2
    assert delta(before, after, "bert_request_sentences_sum", frontend="zmq") == 4
    assert delta(before, after, "bert_request_sentences_bucket", frontend="zmq", le="1.0") == 1
    assert delta(before, after, "bert_request_sentences_bucket", frontend="zmq", le="4.0") == 2
    for frontend in ("http", "openai"):
        assert delta(before, after, "bert_requests_total", frontend=frontend, outcome="error") == 1
        assert delta(before, after, "bert_errors_total", frontend=frontend, type="InvalidRequest") == 1
    # by model: the served model's name, or "" for a body refused before a model was chosen
    assert delta(before, after, "bert_requests_total", frontend="zmq", model="bert", outcome="success") == 2
    assert delta(before, after, "bert_errors_total", frontend="openai", model="bert", type="InvalidRequest") == 1
    assert delta(before, after, "bert_errors_total", frontend="http", model="", type="InvalidRequest") == 1


def test_zeromq_errors_are_counted_by_type(http_bridge):
    import zmq

    before = scrape(http_bridge)
    context = zmq.Context()
    sender = context.socket(zmq.PUSH)
    sender.setsockopt(zmq.LINGER, 1000)
    sender.connect(f"tcp://127.0.0.1:{http_bridge.bridge.port}")
    sender.send_multipart([b"metrics-test", b"not json", b"7", b"1"])  # a well-framed request with a bad payload
    sender.close()
    context.term()
    for _ in range(100):
        after = scrape(http_bridge)
        if delta(before, after, "bert_errors_total", frontend="zmq", type="InvalidRequest") == 1:
            break
        time.sleep(0.05)
    assert delta(before, after, "bert_errors_total", frontend="zmq", type="InvalidRequest") == 1
    assert delta(before, after, "bert_requests_total", frontend="zmq", outcome="error") == 1


@pytest.mark.parametrize("body", [
    {"input": [], "model": "m"},
    {"input": "", "model": "m"},
    {"input": ["fine", ""], "model": "m"},
    {"input": [[]], "model": "m"},
    {"input": 5, "model": "m"},
    {"input": "x", "model": "m", "dimensions": 7},
    {"input": [[99999999]], "model": "m"},
], ids=["empty list", "empty string", "one empty string", "empty id list", "not a string", "dimensions",
        "token id"])
def test_every_refused_embeddings_request_is_counted(http_bridge, body):
    """Whichever check refuses it -- the schema, the front end or the service -- a 422 is one InvalidRequest."""
    before = scrape(http_bridge)
    assert call(f"{http_bridge.url}/v1/embeddings", "POST", json_body=body).status == 422
    after = scrape(http_bridge)
    assert delta(before, after, "bert_errors_total", frontend="openai", type="InvalidRequest") == 1
    assert delta(before, after, "bert_requests_total", frontend="openai", outcome="error") == 1
    assert delta(before, after, "bert_requests_total", frontend="openai", outcome="success") == 0
