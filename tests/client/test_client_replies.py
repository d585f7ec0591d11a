"""How the client matches replies to requests, against a scripted real-socket server (tests/client/conftest.py):
late and duplicate replies, server errors, out-of-order replies, streaming of large lists, clones, the pool."""
from __future__ import annotations

import random
import threading
import time
import warnings

import numpy as np
import pytest

from bert_serving.client import (BertClient, BertTimeoutError, ClientClosedError, ConcurrentBertClient, ProtocolError,
                                 ServerError, VersionMismatchError, protocol)

from harness import run_concurrently
from scripted_server import fake_bert, fake_config, fake_embedding, scripted_server


def client_of(server, **kwargs) -> BertClient:
    return BertClient(port=server.port, port_out=server.port_out, **{"timeout": 5000, **kwargs})


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the scripted server"
        time.sleep(0.01)


def test_a_late_reply_does_not_break_the_next_call():
    def slow_first_encode(request):
        replies = fake_bert(request)
        return [(1.0, replies[0])] if request.request_id == b"2" else replies

    with scripted_server(slow_first_encode) as server, client_of(server, timeout=300) as client:
        with pytest.raises(BertTimeoutError):
            client.encode(["first"])
        wait_until(lambda: any(frames[-1] == b"2" for frames in server.replies_sent))  # the late reply is on its way
        client.encode(["second"], blocking=False)
        # 1.10 raised KeyError: 2 here, when the late reply reached fetch before the one it was waiting for.
        np.testing.assert_array_equal(client.fetch_all(concat=True), fake_embedding(["second"]))
        np.testing.assert_array_equal(client.encode(["third"]), fake_embedding(["third"]))
        assert client.status["num_ignored_reply"] == 1


def test_duplicate_replies_are_ignored():
    def twice(request):
        return fake_bert(request) * 2

    with scripted_server(twice) as server, client_of(server) as client:
        for texts in (["a"], ["b", "c"], ["d"]):
            np.testing.assert_array_equal(client.encode(texts), fake_embedding(texts))
        assert client.server_config["max_seq_len"] == 25
        client.encode(["e"], blocking=False)
        client.encode(["f"], blocking=False)
        np.testing.assert_array_equal(client.fetch_all(concat=True), fake_embedding(["e", "f"]))
        assert client.fetch_all() is None


def test_replies_for_another_identity_sharing_our_prefix_are_ignored():
    def also_to_a_longer_identity(request):
        impostor = protocol.encode_ndarray_reply(request.identity + b"-other", np.zeros((1, 4), np.float32),
                                                 request.request_id)
        return [impostor] + fake_bert(request)

    with scripted_server(also_to_a_longer_identity) as server, client_of(server, identity="ab") as client:
        np.testing.assert_array_equal(client.encode(["x"]), fake_embedding(["x"]))


def test_a_server_error_raises_server_error_with_the_message_and_the_client_stays_usable():
    def fail_on_poison(request):
        if not request.is_command and "poison" in request.texts():
            return [protocol.encode_error_reply(request.identity, "Triton is unreachable at 127.0.0.1:1",
                                                "BackendUnavailable", request.request_id)]
        return fake_bert(request)

    with scripted_server(fail_on_poison) as server, client_of(server) as client:
        with pytest.raises(ServerError) as raised:
            client.encode(["poison"])
        assert raised.value.message == "Triton is unreachable at 127.0.0.1:1"
        assert raised.value.type == "BackendUnavailable" and raised.value.request_id == 2
        np.testing.assert_array_equal(client.encode(["fine"]), fake_embedding(["fine"]))

        for texts in (["a"], ["poison"], ["b"]):
            client.encode(texts, blocking=False)
        with pytest.raises(ServerError, match="unreachable"):
            client.fetch_all()
        assert client.status["num_pending_request"] == 0  # the other replies were received, nothing dangles

        with pytest.raises(ServerError):
            client.encode([f"s{i}" for i in range(600)] + ["poison"])  # streamed: the failing chunk aborts it
        assert client.status["num_pending_request"] == 0
        assert client.encode(["after"]).shape == (1, 4)


def test_fetch_all_returns_sending_order_whatever_the_arrival_order():
    def later_requests_first(request):  # batches of 1, 2, 3 sentences are answered in the order 3, 2, 1
        delay = 0.0 if request.is_command else 0.2 * (3 - request.length)
        return [(delay, frames) for frames in fake_bert(request)]

    with scripted_server(later_requests_first) as server, client_of(server) as client:
        batches = [["a"], ["b", "c"], ["d", "e", "f"]]
        for batch in batches:
            client.encode(batch, blocking=False)
        assert client.status["num_pending_request"] == 3
        arrived = list(client.fetch())
        assert [r.id for r in arrived] == [4, 3, 2]  # the scripted order: fetch does not reorder
        for batch in batches:
            client.encode(batch, blocking=False)
        results = client.fetch_all(sort=True)
        assert [len(r) for r in results] == [1, 2, 3]
        for batch, result in zip(batches, results):
            np.testing.assert_array_equal(result, fake_embedding(batch))
        for batch in batches:
            client.encode(batch, blocking=False)
        assert [len(r) for r in client.fetch_all(sort=False)] == [3, 2, 1]
        for batch in batches:
            client.encode(batch, blocking=False)
        np.testing.assert_array_equal(client.fetch_all(concat=True), fake_embedding(sum(batches, [])))


def test_a_blocking_encode_keeps_replies_to_earlier_non_blocking_requests():
    with scripted_server() as server, client_of(server) as client:
        client.encode(["early"], blocking=False)
        np.testing.assert_array_equal(client.encode(["now"]), fake_embedding(["now"]))
        np.testing.assert_array_equal(client.fetch_all(concat=True), fake_embedding(["early"]))


@pytest.mark.parametrize("max_batch_size, ignore_all_checks, expected_chunk", [(100, False, 100), (100, True, 256)])
def test_a_large_list_is_streamed_in_order_with_bounded_requests_in_flight(max_batch_size, ignore_all_checks,
                                                                            expected_chunk):
    config = fake_config(max_batch_size=max_batch_size)
    rng = random.Random(0)

    def shuffled_replies(request):  # random delays: replies come back out of order
        return [(0.0 if request.is_command else rng.uniform(0, 0.02), frames)
                for frames in fake_bert(request, config=config)]

    texts = [f"sentence number {i}" for i in range(5000)]
    with scripted_server(shuffled_replies) as server, \
            client_of(server, ignore_all_checks=ignore_all_checks, max_in_flight=3) as client:
        embeddings = client.encode(texts)
        np.testing.assert_array_equal(embeddings, fake_embedding(texts))
        sizes = [request.length for request in server.encode_requests()]
        full, rest = divmod(len(texts), expected_chunk)
        assert sizes == [expected_chunk] * full + [rest] * bool(rest)  # in order, max_batch_size each
        assert 1 < server.max_in_flight_seen <= 3
        assert client.status["num_pending_request"] == 0


def test_streamed_encode_joins_tokens_and_formats_lists():
    config = fake_config(max_batch_size=2, show_tokens_to_client=True)
    with scripted_server(lambda r: fake_bert(r, config=config)) as server, \
            client_of(server, output_fmt="list") as client:
        texts = ["a b", "c", "d e f", "g", "h"]
        embeddings, tokens = client.encode(texts, show_tokens=True)
        assert embeddings == fake_embedding(texts).tolist()
        assert tokens == [text.split() for text in texts]
        assert client.encode([["x", "y"]], is_tokenized=True) == fake_embedding([["x", "y"]]).tolist()


def test_show_tokens_without_token_info_warns_and_returns_the_embeddings():
    with scripted_server() as server, client_of(server) as client:
        with pytest.warns(UserWarning, match="show_tokens_to_client"):
            embeddings = client.encode(["a"], show_tokens=True)
        assert isinstance(embeddings, np.ndarray)


def test_returned_arrays_are_writable():
    with scripted_server() as server, client_of(server) as client:
        embeddings = client.encode(["a", "b"])
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)  # in-place, as users normalize
        client.encode(["c"], blocking=False)
        assert client.fetch_all()[0].flags.writeable


def test_length_warning():
    with scripted_server() as server, client_of(server) as client:
        with pytest.warns(UserWarning, match="max_seq_len=25"):
            client.encode([" ".join(["word"] * 30)])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            client.encode([" ".join(["word"] * 25)])


def test_version_mismatch_and_missing_keys():
    def old_server(request):
        return [protocol.encode_json_reply(request.identity, {"server_version": "1.9.9", "max_seq_len": 25},
                                           request.request_id)]

    with scripted_server(old_server) as server:
        with pytest.raises(VersionMismatchError, match="1.9.9"):
            client_of(server)
        with pytest.raises(AttributeError):  # what 1.10 raised
            client_of(server)
        with pytest.raises(ProtocolError, match="show_tokens_to_client"):
            client_of(server, check_version=False)
        with client_of(server, check_version=False, check_token_info=False) as client:
            assert client.length_limit == 25 and client.max_batch_size == 256


def test_encode_async_yields_every_batch_even_from_a_slow_generator():
    def slow_batches():
        for i in range(12):
            time.sleep(0.02 if i % 4 else 0.3)  # 1.10's fetcher gave up when the generator was slower than delay
            yield [f"batch {i}", "x"]

    config = fake_config(max_batch_size=2)  # so at most 2 * 2 sentences, 2 batches, are in flight
    with scripted_server(lambda r: fake_bert(r, config=config)) as server, client_of(server, max_in_flight=2) as client:
        responses = list(client.encode_async(slow_batches(), max_num_batch=10))
        assert sorted(r.id for r in responses) == list(range(2, 12))
        for response in responses:
            i = response.id - 2
            np.testing.assert_array_equal(response.embedding, fake_embedding([f"batch {i}", "x"]))
        assert server.max_in_flight_seen <= 2


def test_encode_async_bounds_the_sentences_in_flight():
    config = fake_config(max_batch_size=3)

    def slow_replies(request):
        return [(0.0 if request.is_command else 0.05, frames) for frames in fake_bert(request, config=config)]

    batches = [[f"batch {i}"] for i in range(20)]
    with scripted_server(slow_replies) as server, client_of(server, max_in_flight=2) as client:
        responses = sorted(client.encode_async(iter(batches)), key=lambda r: r.id)
        assert len(responses) == 20
        for batch, response in zip(batches, responses):
            np.testing.assert_array_equal(response.embedding, fake_embedding(batch))
        assert server.max_in_flight_seen == 2 * 3  # max_in_flight batches of max_batch_size sentences


def test_listen_receives_what_is_multicast_to_a_shared_identity():
    with scripted_server() as server, client_of(server) as client:
        received = []

        def clone():
            # A pure listener sends nothing, so it needs no checks (a config request would race its SUBSCRIBE).
            with client_of(server, identity=client.identity, ignore_all_checks=True, timeout=2000) as copy:
                listener = copy.listen()
                try:
                    received.extend(next(listener) for _ in range(3))
                except BertTimeoutError:
                    pass

        thread = threading.Thread(target=clone)
        thread.start()
        # Replies are multicast only to the subscribers the server knows of.
        wait_until(lambda: server.subscriptions.count(client.identity) == 2)
        batches = [["a"], ["b", "c"], ["d"]]
        for batch in batches:
            np.testing.assert_array_equal(client.encode(batch), fake_embedding(batch))
        thread.join(10)
        assert len(received) == 3
        for batch, embedding in zip(batches, received):
            np.testing.assert_array_equal(embedding, fake_embedding(batch))


def test_concurrent_client_from_threads():
    with scripted_server() as server, \
            ConcurrentBertClient(max_concurrency=3, port=server.port, port_out=server.port_out, timeout=5000) as pool:
        results = {}

        def work(worker):
            for i in range(10):
                texts = [f"worker {worker} text {i}", "shared"]
                results[(worker, i)] = (texts, pool.encode(texts))

        assert not run_concurrently(work, range(6), timeout_s=60)
        assert len(results) == 60
        for texts, embeddings in results.values():
            np.testing.assert_array_equal(embeddings, fake_embedding(texts))
        identities = {request.identity for request in server.requests}
        assert len(identities) <= 3  # never more clients than max_concurrency
        assert pool.server_config["max_seq_len"] == 25 and "client_version" in pool.status
        with pytest.raises(NotImplementedError):
            pool.fetch_all()


def test_a_closed_client_says_so():
    with scripted_server() as server:
        client = client_of(server)
        client.close()
        with pytest.raises(ClientClosedError):
            client.encode(["a"])
        client.close()  # twice is fine


def test_a_busy_pool_waits_for_a_free_client_instead_of_failing():
    def slow_encodes(request):
        return [(0.0 if request.is_command else 0.3, frames) for frames in fake_bert(request)]

    with scripted_server(slow_encodes) as server, \
            ConcurrentBertClient(max_concurrency=1, port=server.port, port_out=server.port_out, timeout=5000) as pool:
        results = []
        errors = run_concurrently(lambda i: results.append(pool.encode([f"text {i}"])), range(3), timeout_s=30)
        assert not errors and len(results) == 3  # 1.10 raised RuntimeError('Too many concurrent connections!')
        assert len({request.identity for request in server.requests}) == 1


def test_show_progress_reports_sentences_per_second(capsys):
    with scripted_server(lambda r: fake_bert(r, config=fake_config(max_batch_size=10))) as server, \
            client_of(server) as client:
        client.encode([f"s{i}" for i in range(50)], show_progress=True)
        assert "sentences/s" in capsys.readouterr().err
        client.encode([f"s{i}" for i in range(50)])
        assert capsys.readouterr().err == ""  # off by default
