"""Our client against the real bridge (bert-serving-start on the packaged all-MiniLM-L6-v2: 384-dim float32,
max_seq_len 25, max_batch_size 256): every method of the 1.10 API, server errors, and a 5,000-sentence encode."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from bert_serving.client import BertClient, BertTimeoutError, ConcurrentBertClient, ServerError
from harness import free_port, run_concurrently

DIM = 384
TIMEOUT_MS = 120_000  # a CPU-only Triton shared with other test suites is slow; a hang must still end
SENTENCES = ["the quick brown fox jumps over the lazy dog", "hello world", "good day", "BERT on Triton",
             "a completely different topic: tax law in the 19th century", "Zürich ist schön", "你好，世界"]


def sentence(i: int) -> str:
    words = ["alpha", "beta", "gamma", "delta", "river", "mountain", "city", "music", "number", "blue"]
    return f"sentence {i}: {words[i % 10]} {words[(i // 10) % 10]} {words[(i // 100) % 10]}"


@pytest.fixture
def client(default_bridge):
    with BertClient(port=default_bridge.port, port_out=default_bridge.port_out, timeout=TIMEOUT_MS) as client:
        yield client


@pytest.fixture(scope="module")
def tokens_bridge(start_bridge):
    with start_bridge("-show_tokens_to_client") as bridge:
        yield bridge


def test_server_config_status_and_client_status(client, default_bridge):
    config = client.server_config
    assert config["server_version"] == "1.10.0"
    assert (config["max_seq_len"], config["max_batch_size"], config["show_tokens_to_client"]) == (25, 256, False)
    assert client.max_batch_size == 256 and client.length_limit == 25 and not client.token_info_available
    status = client.server_status
    assert "statistic" in status and status["server_version"] == "1.10.0"
    own = client.status
    assert own["num_request"] == 3 and own["num_pending_request"] == 0 and own["port"] == default_bridge.port
    assert own["client_version"].startswith("1.10.0")


def test_encode_returns_one_writable_float32_row_per_sentence(client):
    embeddings = client.encode(SENTENCES)
    assert embeddings.shape == (len(SENTENCES), DIM) and embeddings.dtype == np.float32
    assert embeddings.flags.writeable
    assert np.all(np.isfinite(embeddings))
    assert len({row.tobytes() for row in embeddings}) == len(SENTENCES)  # different sentences, different rows
    np.testing.assert_allclose(client.encode(SENTENCES[2:4]), embeddings[2:4], atol=1e-5)  # row i is sentence i


def test_output_fmt_list(default_bridge, client):
    with BertClient(port=default_bridge.port, port_out=default_bridge.port_out, output_fmt="list",
                    timeout=TIMEOUT_MS) as list_client:
        rows = list_client.encode(SENTENCES[:3])
        assert isinstance(rows, list) and all(isinstance(row, list) and len(row) == DIM for row in rows)
        np.testing.assert_allclose(np.array(rows, dtype=np.float32), client.encode(SENTENCES[:3]), atol=1e-5)
        list_client.encode(SENTENCES[:2], blocking=False)
        list_client.encode(SENTENCES[2:3], blocking=False)
        concatenated = list_client.fetch_all(concat=True)
        assert isinstance(concatenated, list) and len(concatenated) == 3
        np.testing.assert_allclose(np.array(concatenated), np.array(rows), atol=1e-5)


def test_tokenized_input_equals_the_same_words_as_text(client):
    # Lower-case words that are whole vocabulary entries: tokens of tokenized input are looked up as they are.
    texts = SENTENCES[:3]
    words = [s.split() for s in texts]
    np.testing.assert_allclose(client.encode(words, is_tokenized=True), client.encode(texts), atol=1e-5)


def test_a_pair_is_not_the_concatenation_of_its_sentences(client):
    pair, joined = client.encode(["how old are you ||| what is your age", "how old are you what is your age"])
    assert pair.shape == (DIM,)
    assert not np.allclose(pair, joined, atol=1e-3)  # the pair gets [SEP] and segment ids


def test_show_tokens_without_server_support_warns(client):
    with pytest.warns(UserWarning, match="show_tokens_to_client"):
        embeddings = client.encode(["hello world"], show_tokens=True)
    assert embeddings.shape == (1, DIM)


def test_show_tokens(tokens_bridge):
    with BertClient(port=tokens_bridge.port, port_out=tokens_bridge.port_out, timeout=TIMEOUT_MS) as client:
        assert client.token_info_available
        embeddings, tokens = client.encode(["hello world", "good day"], show_tokens=True)
        assert embeddings.shape == (2, DIM)
        assert tokens == [["[CLS]", "hello", "world", "[SEP]"], ["[CLS]", "good", "day", "[SEP]"]]
        _, tokens = client.encode([["hello", "wörld"]], is_tokenized=True, show_tokens=True)
        assert tokens[0][0] == "[CLS]" and tokens[0][1] == "hello" and tokens[0][-1] == "[SEP]"
        texts = [sentence(i) for i in range(300)]  # streamed as 256 + 44: one token list per sentence, in order
        embeddings, tokens = client.encode(texts, show_tokens=True)
        assert embeddings.shape == (300, DIM) and len(tokens) == 300
        assert tokens[299][1:4] == ["sentence", "299", ":"]


def test_fetch_all_returns_sending_order(client):
    batches = [[sentence(i) for i in range(start, start + size)] for start, size in ((0, 120), (200, 1), (300, 7))]
    expected = [client.encode(batch) for batch in batches]
    for batch in batches:
        assert client.encode(batch, blocking=False) is None
    assert client.status["num_pending_request"] == 3
    results = client.fetch_all(sort=True)
    assert [r.shape for r in results] == [(120, DIM), (1, DIM), (7, DIM)]
    for result, want in zip(results, expected):
        np.testing.assert_allclose(result, want, atol=1e-5)
    for batch in batches:
        client.encode(batch, blocking=False)
    np.testing.assert_allclose(client.fetch_all(concat=True), np.concatenate(expected), atol=1e-5)
    assert client.fetch_all() is None


def test_fetch_yields_responses_with_request_ids(client):
    ids = []
    for i in range(3):
        client.encode([sentence(i)], blocking=False)
        ids.append(client.status["num_request"])
    responses = list(client.fetch())
    assert sorted(r.id for r in responses) == ids
    for response in responses:
        assert response.embedding.shape == (1, DIM) and response.tokens == ""


def test_encode_async(client):
    batches = [[sentence(i), sentence(i + 1)] for i in range(0, 24, 2)]
    responses = sorted(client.encode_async(iter(batches), max_num_batch=10), key=lambda r: r.id)
    assert len(responses) == 10
    together = client.encode(sum(batches[:10], []))
    np.testing.assert_allclose(np.concatenate([r.embedding for r in responses]), together, atol=1e-5)


def test_concurrent_client_from_threads(default_bridge, client):
    texts = [sentence(i) for i in range(40)]
    expected = client.encode(texts)
    results = {}
    with ConcurrentBertClient(max_concurrency=3, port=default_bridge.port, port_out=default_bridge.port_out,
                              timeout=TIMEOUT_MS) as pool:
        def work(worker):
            for i in range(worker, 40, 5):
                results[i] = pool.encode([texts[i]])

        errors = run_concurrently(work, range(5))
        assert pool.server_config["max_seq_len"] == 25
    assert not errors and len(results) == 40
    np.testing.assert_allclose(np.concatenate([results[i] for i in range(40)]), expected, atol=1e-5)


def test_clones_sharing_an_identity_listen(default_bridge, client):
    received, errors = [], []

    def clone():
        try:
            with BertClient(port=default_bridge.port, port_out=default_bridge.port_out, identity=client.identity,
                            ignore_all_checks=True, timeout=30_000) as copy:
                listener = copy.listen()
                subscribed.set()
                received.extend(next(listener) for _ in range(2))
        except Exception as e:  # surfaced below
            errors.append(e)

    subscribed = threading.Event()
    thread = threading.Thread(target=clone)
    thread.start()
    assert subscribed.wait(30)
    # The clone's SUBSCRIBE travels on its own connection: give it a moment to reach the bridge's XPUB.
    time.sleep(0.5)
    sent = [client.encode(SENTENCES[:2]), client.encode(SENTENCES[2:5])]
    thread.join(60)
    assert not errors and len(received) == 2
    for mine, theirs in zip(sent, received):
        np.testing.assert_allclose(theirs, mine, atol=0)


def test_5000_sentences_stream_through_max_batch_size_in_order(client):
    texts = [sentence(i) for i in range(5000)]
    requests_before = client.status["num_request"]
    embeddings = client.encode(texts)
    assert embeddings.shape == (5000, DIM)
    assert client.status["num_request"] - requests_before == math.ceil(5000 / 256)  # streamed, 256 per request
    sample = sorted(np.random.default_rng(0).choice(5000, size=50, replace=False)) + [0, 255, 256, 4999]
    one_by_one = np.concatenate([client.encode([texts[i]]) for i in sample])
    np.testing.assert_allclose(embeddings[sample], one_by_one, atol=1e-5)


def test_server_error_carries_the_servers_message_and_the_client_stays_usable(start_bridge):
    # An external Triton that is not there: the bridge serves anyway and answers each encode with an error reply.
    with start_bridge("--triton-url", f"127.0.0.1:{free_port()}", "-triton_timeout_s", "5") as bridge:
        client = BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60_000)
        for _ in range(2):
            with pytest.raises(ServerError) as raised:
                client.encode(["hello world"])
            assert raised.value.type == "BackendUnavailable"
            assert "Triton" in raised.value.message and raised.value.message in str(raised.value)
            assert client.status["num_pending_request"] == 0
        assert client.server_config["server_version"] == "1.10.0"  # the client (and the bridge) still work
        client.encode(["a"], blocking=False)
        client.encode(["b"], blocking=False)
        with pytest.raises(ServerError):
            client.fetch_all()
        assert client.status["num_pending_request"] == 0
        bridge.stop()  # start_bridge would only signal it on leaving the block, not wait for its exit
    client.timeout = 2000
    try:  # the bridge has stopped now: the next wait ends on time instead of hanging
        with pytest.raises(BertTimeoutError):
            client.encode(["anyone there?"])
    finally:
        client.close()
