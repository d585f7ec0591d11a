"""Every HTTP route with a real HTTP client against a real bridge + tritonserver (issue 8, Done when 1).

The ZeroMQ front end of the same bridge is the reference for what HTTP returns. 401/413/429 need other flags and live
in test_http_limits.py; 503 in test_http_ready.py.
"""
from __future__ import annotations

import re
import urllib.parse

import numpy as np
import pytest

from http_calls import call

pytestmark = pytest.mark.slow

JSON = "application/json"
SENTENCES = ["First do it", "then do it right", "then do it better", "a ||| pair of sentences"]


def _matrix(reply) -> np.ndarray:
    return np.asarray(reply.json()["result"], dtype=np.float32)


def test_encode_json_matches_zeromq_and_echoes_the_id(http_bridge, zmq_client):
    reply = call(f"{http_bridge.url}/encode", "POST", json_body={"id": 123, "texts": SENTENCES, "is_tokenized": False})
    assert reply.status == 200
    body = reply.json()
    assert (body["id"], body["status"]) == (123, 200)
    assert body["result"] == body["results"]  # the original code's key and its docs' key
    np.testing.assert_allclose(_matrix(reply), zmq_client.encode(SENTENCES), atol=1e-6, rtol=0)
    for header in ("x-tokenization-time", "x-inference-time", "x-total-time"):
        assert float(reply.headers[header]) >= 0
    assert float(reply.headers["x-total-time"]) >= float(reply.headers["x-inference-time"])


def test_encode_form_and_tokenized_input(http_bridge, zmq_client):
    form = urllib.parse.urlencode([("id", "form-1"), ("texts", SENTENCES[0]), ("texts", SENTENCES[1])]).encode()
    reply = call(f"{http_bridge.url}/encode", "POST", data=form,
                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status == 200 and reply.json()["id"] == "form-1"
    np.testing.assert_allclose(_matrix(reply), zmq_client.encode(SENTENCES[:2]), atol=1e-6, rtol=0)

    tokens = [["hello", "world", "!"], ["good", "day"]]
    reply = call(f"{http_bridge.url}/encode", "POST", json_body={"id": None, "texts": tokens, "is_tokenized": True})
    assert reply.status == 200
    np.testing.assert_allclose(_matrix(reply), zmq_client.encode(tokens, is_tokenized=True), atol=1e-6, rtol=0)


@pytest.mark.parametrize("body, content_type, expected", [
    (b'{"id": 1, "texts": ["unterminated', "application/json", "Invalid JSON"),
    (b'{"id": 1, "texts": "not a list"}', "application/json", "texts"),
    (b'{"id": 1, "texts": [1, 2]}', "application/json", "texts"),
    (b'{"id": 1, "texts": []}', "application/json", "at least one sentence"),
    (b'{"texts": ["no id"]}', "application/json", "id"),
    (b'{"id": 1, "texts": ["a"], "is_tokenized": true}', "application/json", "is_tokenized"),
    (b'{"id": 1, "texts": [["a"]], "is_tokenized": false}', "application/json", "is_tokenized"),
    (b'{"id": 1, "texts": [["a"]], "is_tokenized": "yes"}', "application/json", "is_tokenized"),
])
def test_encode_rejects_bad_input_with_422(http_bridge, body, content_type, expected):
    reply = call(f"{http_bridge.url}/encode", "POST", data=body, headers={"content-type": content_type})
    assert reply.status == 422, reply.body
    error = reply.json()
    assert (error["type"], error["status"]) == ("InvalidRequest", 422)
    assert expected in error["description"]


@pytest.mark.parametrize("body, content_type, request_id", [
    (b'{"id": 1, "texts": [1]}', JSON, 1),
    (b'{"id": "abc", "texts": "not a list"}', JSON, "abc"),
    (b'{"id": [1, 2], "texts": [["a"]], "is_tokenized": "yes"}', JSON, [1, 2]),
    (b'{"id": null, "texts": [["a"]], "is_tokenized": false}', JSON, None),
    (b"id=form-7&texts=a&is_tokenized=true", "application/x-www-form-urlencoded", "form-7"),
])
def test_encode_errors_return_the_id_whenever_it_can_be_read(http_bridge, body, content_type, request_id):
    reply = call(f"{http_bridge.url}/encode", "POST", data=body, headers={"content-type": content_type})
    assert reply.status == 422
    assert reply.json()["id"] == request_id


@pytest.mark.parametrize("body", [b'{"id": 1, "texts": ["unterminated', b'{"texts": [1]}', b'[1, 2]', b'"text"'])
def test_encode_errors_without_a_readable_id_have_none(http_bridge, body):
    reply = call(f"{http_bridge.url}/encode", "POST", data=body, headers={"content-type": JSON})
    assert reply.status == 422 and "id" not in reply.json()


def test_the_log_names_the_address_http_is_bound_to(http_bridge):
    """Bound to -ip's default 0.0.0.0 (every interface), and the start log says so, as it does for ZeroMQ."""
    log = http_bridge.bridge.log()
    assert f"HTTP on http://0.0.0.0:{http_bridge.http_port} (" in log, log
    assert f"ZeroMQ on tcp://0.0.0.0:{http_bridge.bridge.port} " in log


def test_status_server_counts_http_requests(http_bridge):
    before = call(f"{http_bridge.url}/status/server").json()
    assert call(f"{http_bridge.url}/encode", "POST", json_body={"id": 1, "texts": SENTENCES}).status == 200
    after = call(f"{http_bridge.url}/status/server").json()
    assert after["status"] == 200
    assert after["server_version"] == "1.10.0" and after["max_seq_len"] == 25 and after["http_port"] is not None
    assert after["statistic"]["num_data_request"] == before["statistic"]["num_data_request"] + 1
    assert after["statistic"]["num_total_seq"] == before["statistic"]["num_total_seq"] + len(SENTENCES)
    assert after["client"] == "http:127.0.0.1"


def test_status_client(http_bridge):
    before = call(f"{http_bridge.url}/status/client").json()
    call(f"{http_bridge.url}/encode", "POST", json_body={"id": 1, "texts": ["one"]})
    after = call(f"{http_bridge.url}/status/client").json()
    assert after["identity"] == "http:127.0.0.1"
    assert after["num_request"] == before["num_request"] + 1
    assert after["http_max_connect"] == 64 and after["server_version"] == "1.10.0"


def test_health_and_ready(http_bridge):
    assert call(f"{http_bridge.url}/health").json() == {"status": "ok"}
    ready = call(f"{http_bridge.url}/ready")
    assert ready.status == 200 and ready.json()["status"] == "ready"


def test_models(http_bridge):
    models = call(f"{http_bridge.url}/v1/models").json()
    assert models["object"] == "list" and len(models["data"]) == 1
    card = models["data"][0]
    assert card["object"] == "model" and card["dimensions"] == 384
    assert call(f"{http_bridge.url}/v1/models/{card['id']}").json() == card
    missing = call(f"{http_bridge.url}/v1/models/no-such-model")
    assert missing.status == 404 and missing.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embeddings"])
def test_embeddings_route_in_both_spellings(http_bridge, zmq_client, path):
    reply = call(f"{http_bridge.url}{path}", "POST", json_body={"input": SENTENCES[1], "model": "any"})
    assert reply.status == 200
    body = reply.json()
    assert body["object"] == "list" and body["data"][0]["index"] == 0
    np.testing.assert_allclose(body["data"][0]["embedding"], zmq_client.encode([SENTENCES[1]])[0], atol=1e-6, rtol=0)
    assert float(reply.headers["x-total-time"]) >= 0


@pytest.mark.parametrize("body, param, expected", [
    ({"input": ["fine"], "model": "m", "dimensions": 3}, "dimensions", "384"),
    ({"input": [[101, 30522]], "model": "m"}, "input", "outside the model's vocabulary"),
    ({"input": [-1], "model": "m"}, "input", "outside the model's vocabulary"),
    ({"input": [], "model": "m"}, "input", "must not be empty"),
    ({"input": "", "model": "m"}, "input", "empty string"),
    ({"input": [[]], "model": "m"}, "input", "non-empty list of token ids"),
    ({"input": [1.5], "model": "m"}, "input", ""),
    ({"input": ["a", 1], "model": "m"}, "input", ""),
    ({"input": ["a"], "model": 7}, "model", "string"),
    ({"input": ["a"], "model": "m", "encoding_format": "int8"}, "encoding_format", ""),
])
def test_embeddings_reject_bad_input_with_422_in_openai_envelope(http_bridge, body, param, expected):
    reply = call(f"{http_bridge.url}/v1/embeddings", "POST", json_body=body)
    assert reply.status == 422, reply.body
    error = reply.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert expected in error["message"]


@pytest.mark.parametrize("body", [b'{"input": [', b'{"input": "hello", "model":', b'{"input": "x", "model": "m"]'])
def test_embeddings_reject_bad_json_in_the_words_of_encode(http_bridge, body):
    reply = call(f"{http_bridge.url}/v1/embeddings", "POST", data=body, headers={"content-type": JSON})
    original = call(f"{http_bridge.url}/encode", "POST", data=body, headers={"content-type": JSON})
    assert reply.status == original.status == 422
    error = reply.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", None)
    assert error["message"] == original.json()["description"]
    assert re.fullmatch(r"the request body: Invalid JSON: .+ at line 1 column \d+", error["message"]), error


def test_metrics_route_is_prometheus_text(http_bridge):
    reply = call(f"{http_bridge.url}/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    assert b"bert_requests_total" in reply.body


def test_activity_route(http_bridge):
    activity = call(f"{http_bridge.url}/status/activity").json()
    assert activity["model"] and activity["pooling_strategy"] == "REDUCE_MEAN" and activity["output_dim"] == 384
    assert len(activity["series"]["sentences_per_s"]) == len(activity["series"]["seconds_ago"])


def test_openapi_describes_every_route(http_bridge):
    spec = call(f"{http_bridge.url}/openapi.json").json()
    assert set(spec["paths"]) >= {"/encode", "/status/server", "/status/client", "/v1/embeddings", "/v1/models",
                                  "/health", "/ready", "/metrics", "/status/activity", "/rerank", "/v1/rerank",
                                  "/predict", "/embed_sparse"}


def test_docs_and_dashboard_load_without_any_cdn(http_bridge):
    for page in ("/docs", "/dashboard"):
        reply = call(f"{http_bridge.url}{page}")
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
        html = reply.body.decode()
        assets = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html) + re.findall(r"url: ?'([^']+)'", html)
        assert assets, html
        for asset in assets:
            assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
            assert call(f"{http_bridge.url}{asset}").status == 200, asset


def test_cors_header(http_bridge):
    reply = call(f"{http_bridge.url}/status/server", headers={"origin": "http://example.test"})
    assert reply.headers["access-control-allow-origin"] == "*"
    preflight = call(f"{http_bridge.url}/v1/embeddings", "OPTIONS", headers={
        "origin": "http://example.test", "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})
    assert preflight.status == 200 and preflight.headers["access-control-allow-origin"] == "*"


def test_unknown_route_is_404(http_bridge):
    assert call(f"{http_bridge.url}/no/such/route").status == 404
    assert call(f"{http_bridge.url}/v1/no-such-route").json()["error"]["code"] == "not_found"


def test_http_client_matches_zeromq_client(http_bridge, zmq_client):
    from bert_serving.client import HTTPBertClient

    with HTTPBertClient(port=http_bridge.http_port, timeout=60_000, batch_size=3) as client:
        vectors = client.encode(SENTENCES)  # two POSTs of at most 3 sentences, put back in order
        np.testing.assert_allclose(vectors, zmq_client.encode(SENTENCES), atol=1e-6, rtol=0)
        assert vectors.dtype == np.float32
        tokens = [["hello", "world"]]
        np.testing.assert_allclose(client.encode(tokens, is_tokenized=True),
                                   zmq_client.encode(tokens, is_tokenized=True), atol=1e-6, rtol=0)
        assert client.server_config["max_seq_len"] == 25
        assert client.server_status["statistic"]["num_data_request"] >= 1
        assert client.status["num_request"] == 3
    as_list = HTTPBertClient(port=http_bridge.http_port, output_fmt="list").encode(["one"])
    assert isinstance(as_list, list) and len(as_list[0]) == 384
