"""401 (API key), 413 (body size) and 429 (-http_max_connect) against a real bridge (issue 8, Done when 1).

One bridge for the module: the key comes from the environment variable, one concurrent HTTP encode is allowed, and
bodies over 4,096 bytes are refused.
"""
from __future__ import annotations

import http.client
import json
import threading

import numpy as np
import pytest

from harness import free_port
from http_calls import HttpBridge, call

pytestmark = pytest.mark.slow

KEY = "test-key-0123456789"
MAX_REQUEST_BYTES = 4096


@pytest.fixture(scope="module")
def limited_bridge(start_bridge):
    port = free_port()
    with start_bridge("-http_port", str(port), "-http_max_connect", "1", "--http-max-request-bytes",
                      str(MAX_REQUEST_BYTES), env={"BERT_SERVING_API_KEY": KEY}) as bridge:
        yield HttpBridge(bridge=bridge, http_port=port, api_key=KEY)


def authorized(extra: dict | None = None) -> dict:
    return {"authorization": f"Bearer {KEY}", **(extra or {})}


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/encode", {"id": 1, "texts": ["hi"]}),
    ("GET", "/status/server", None),
    ("GET", "/status/client", None),
    ("GET", "/status/activity", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/embeddings", {"input": "hi", "model": "m"}),
    ("POST", "/embeddings", {"input": "hi", "model": "m"}),
])
def test_data_routes_need_the_api_key(limited_bridge, method, path, body):
    url = f"{limited_bridge.url}{path}"
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEY}):
        reply = call(url, method, json_body=body, headers=headers)
        assert reply.status == 401, (headers, reply.body)
        assert reply.headers["www-authenticate"] == "Bearer"
        error = reply.json()
        if path.startswith(("/v1", "/embeddings")):
            assert error["error"]["code"] == "invalid_api_key"
        else:
            assert (error["type"], error["status"]) == ("Unauthorized", 401)
    assert call(url, method, json_body=body, headers=authorized()).status == 200


@pytest.mark.parametrize("path", ["/health", "/ready", "/dashboard", "/docs", "/openapi.json"])
def test_health_ready_and_data_free_pages_need_no_key(limited_bridge, path):
    assert call(f"{limited_bridge.url}{path}").status == 200


def test_openai_sdk_with_and_without_the_key(limited_bridge):
    import openai

    good = openai.OpenAI(base_url=f"{limited_bridge.url}/v1", api_key=KEY, max_retries=0)
    assert len(good.embeddings.create(input=["hi"], model="m").data[0].embedding) == 384
    bad = openai.OpenAI(base_url=f"{limited_bridge.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(input=["hi"], model="m")


def test_http_client_sends_the_key(limited_bridge):
    from bert_serving.client import HTTPBertClient, ServerError

    with pytest.raises(ServerError, match="Unauthorized"):
        HTTPBertClient(port=limited_bridge.http_port).encode(["hi"])
    assert HTTPBertClient(port=limited_bridge.http_port, api_key=KEY).encode(["hi"]).shape == (1, 384)


def test_too_large_body_gets_413_before_parsing(limited_bridge):
    texts = ["x" * 100] * 50  # about 5 KB of JSON
    for path, body in (("/encode", {"id": 1, "texts": texts}), ("/v1/embeddings", {"input": texts, "model": "m"})):
        reply = call(f"{limited_bridge.url}{path}", "POST", json_body=body, headers=authorized())
        assert reply.status == 413, reply.body
        error = reply.json()
        message = error["error"]["message"] if path.startswith("/v1") else error["description"]
        assert str(MAX_REQUEST_BYTES) in message
    # Not JSON at all: refused for its size alone, so it was never parsed.
    reply = call(f"{limited_bridge.url}/encode", "POST", data=b"\xff" * (MAX_REQUEST_BYTES + 1),
                 headers=authorized({"content-type": "application/json"}))
    assert reply.status == 413 and reply.json()["type"] == "RequestTooLarge"


def test_chunked_body_over_the_limit_gets_413(limited_bridge):
    connection = http.client.HTTPConnection("127.0.0.1", limited_bridge.http_port, timeout=60)
    chunks = (json.dumps({"id": 1, "texts": ["y" * 1000] * 8}).encode()[i:i + 1000] for i in range(0, 9000, 1000))
    connection.request("POST", "/encode", body=chunks, encode_chunked=True,
                       headers=authorized({"content-type": "application/json"}))
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["type"] == "RequestTooLarge"
    connection.close()
    small = (part for part in (b'{"id": 2, ', b'"texts": ["chunked"]}'))
    connection = http.client.HTTPConnection("127.0.0.1", limited_bridge.http_port, timeout=60)
    connection.request("POST", "/encode", body=small, encode_chunked=True,
                       headers=authorized({"content-type": "application/json"}))
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["id"] == 2
    connection.close()


def test_concurrent_encodes_over_the_limit_get_429_never_a_hang(limited_bridge):
    # 40 sentences at most per request keep the body under the 4 KB limit; 8 at once against a limit of 1.
    texts = [f"sentence {i} of a concurrent request" for i in range(40)]
    replies, errors = [], []
    start = threading.Barrier(8)

    def post(index: int) -> None:
        try:
            start.wait()
            path, body = (("/encode", {"id": index, "texts": texts}) if index % 2 else
                          ("/v1/embeddings", {"input": texts, "model": "m"}))
            replies.append((path, call(f"{limited_bridge.url}{path}", "POST", json_body=body, headers=authorized(),
                                       timeout_s=120)))
        except Exception as e:  # handed to the assertion below
            errors.append(e)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not errors and len(replies) == 8  # every request got an answer
    statuses = sorted(reply.status for _, reply in replies)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 1, statuses
    for path, reply in replies:
        if reply.status == 429:
            assert reply.headers["retry-after"] == "1"
            error = reply.json()
            if path.startswith("/v1"):
                assert error["error"]["code"] == "rate_limit_exceeded"
            else:
                assert error["type"] == "TooManyConcurrentRequests" and "-http_max_connect" in error["description"]
        else:
            body = reply.json()
            vectors = body["result"] if path == "/encode" else [d["embedding"] for d in body["data"]]
            assert np.asarray(vectors).shape == (40, 384)
    # The limit counts requests in flight, not requests ever made: the server serves again at once.
    assert call(f"{limited_bridge.url}/encode", "POST", json_body={"id": 9, "texts": ["after"]},
                headers=authorized()).status == 200


def test_dashboard_asks_for_the_key_then_shows_the_numbers(limited_bridge, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{limited_bridge.url}/dashboard")
    form = browser.find_element(By.ID, "key-form")
    WebDriverWait(browser, 30).until(lambda b: form.is_displayed())
    browser.find_element(By.ID, "key-input").send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    expected = call(f"{limited_bridge.url}/status/server", headers=authorized()).json()["statistic"]
    WebDriverWait(browser, 30).until(
        lambda b: b.find_element(By.ID, "num-total-seq").text == str(expected["num_total_seq"]))
    assert not form.is_displayed()
