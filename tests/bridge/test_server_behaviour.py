"""The original server's behaviour over ZeroMQ, seen through the unmodified 1.10 client and raw sockets.

Every test runs twice: with the embedded tritonserver, and with ``--triton-url`` against a tritonserver started
separately (issue 4, point 4).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from bert_bridge.terminate import listening_sockets
from harness import free_port, run_concurrently, standalone_triton

pytestmark = pytest.mark.slow

ORIGINAL_CONFIG_KEYS = {
    "client", "num_process", "ventilator -> worker", "worker -> sink", "ventilator <-> sink", "server_current_time",
    "device_map", "num_concurrent_socket", "ckpt_name", "config_name", "cors", "cpu", "do_lower_case",
    "fixed_embed_length", "fp16", "gpu_memory_fraction", "graph_tmp_dir", "http_max_connect", "http_port",
    "mask_cls_sep", "max_batch_size", "max_seq_len", "model_dir", "no_position_embeddings", "no_special_token",
    "num_worker", "pooling_layer", "pooling_strategy", "port", "port_out", "prefetch_size", "priority_batch_size",
    "show_tokens_to_client", "tuned_model_dir", "verbose", "xla", "tensorflow_version", "python_version",
    "server_version", "pyzmq_version", "zmq_version", "server_start_time",
}


@pytest.fixture(scope="module")
def separate_triton(default_export, tmp_path_factory):
    """A tritonserver started on its own with `bert-serving-triton` (model_repository/README.md's command), on its
    default address."""
    with standalone_triton(default_export.repository, tmp_path_factory.mktemp("separate-triton"), "--model",
                           default_export.name, timeout_s=120) as server:
        yield server
    assert server.process.returncode == 0, server.log()


def test_bert_serving_triton_listens_on_this_machine_only_by_default(separate_triton):
    """Triton has no authentication: its gRPC, HTTP and metrics ports stay on 127.0.0.1 unless --address opens them."""
    ready = next(line for line in separate_triton.log().splitlines() if "tritonserver ready:" in line)
    ports = [int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", ready)]
    assert len(ports) == 3 and separate_triton.port in ports, ready
    for port in ports:
        bound = {str(address) for address, _ in listening_sockets(port)}
        assert bound == {"127.0.0.1"}, f"port {port} listens on {bound}"


@pytest.fixture(scope="module", params=["embedded", "external"])
def bridge(request, start_bridge, default_export):
    # Short sequences keep 10,000 requests cheap on a CPU; the behaviour tested here does not depend on length.
    flags = ["-show_tokens_to_client", "-max_seq_len", "10"]
    if request.param == "external":
        triton = request.getfixturevalue("separate_triton")
        flags += ["-model_dir", str(default_export.folder), "--triton-url", f"127.0.0.1:{triton.port}"]
    with start_bridge(*flags) as running:
        yield running


def client(legacy_client, bridge, **kwargs):
    return legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000, **kwargs)


def test_config_has_the_original_keys_and_ours(bridge, legacy_client):
    with client(legacy_client, bridge) as bc:
        config = bc.server_config
    assert ORIGINAL_CONFIG_KEYS <= set(config)
    assert config["server_version"] == "1.10.0" and config["client"] == bc.identity.decode()
    assert config["show_tokens_to_client"] is True and config["max_batch_size"] == 256
    assert config["triton"]["model"] and config["triton"]["url"]
    assert config["output_dim"] == 384 and config["bridge_version"]


def test_status_counts_requests_like_the_original(bridge, legacy_client):
    with client(legacy_client, bridge) as bc:
        before = bc.server_status["statistic"]
        bc.encode(["one", "two", "three"])
        bc.encode(["four"])
        after = bc.server_status["statistic"]
    assert after["num_data_request"] - before["num_data_request"] == 2
    assert after["num_total_seq"] - before["num_total_seq"] == 4
    assert after["num_sys_request"] - before["num_sys_request"] == 1  # the second SHOW_STATUS counts itself
    assert after["num_total_request"] == after["num_data_request"] + after["num_sys_request"]
    assert after["num_active_client"] >= 1 and after["num_total_client"] >= 1
    for family in ("request_per_client", "size_per_request", "last_two_interval", "request_per_second"):
        assert {f"{p}_{family}" for p in ("avg", "min", "max", "num_min", "num_max")} <= set(after)


def test_show_tokens_tokenized_input_and_pairs(bridge, legacy_client):
    with client(legacy_client, bridge) as bc:
        vectors, tokens = bc.encode(["hello world", "a cat ||| a dog"], show_tokens=True)
        tokenized, tokenized_tokens = bc.encode([["hello", "world"], ["qwxzzv"]], is_tokenized=True,
                                                show_tokens=True)
    assert vectors.shape == (2, 384)
    assert tokens == [["[CLS]", "hello", "world", "[SEP]"], ["[CLS]", "a", "cat", "[SEP]", "a", "dog", "[SEP]"]]
    assert tokenized_tokens == [["[CLS]", "hello", "world", "[SEP]"], ["[CLS]", "[UNK]", "[SEP]"]]
    assert np.abs(tokenized[0] - vectors[0]).max() <= 1e-5  # same tokens, same vector


def test_non_blocking_fetch_all_sorted_and_concatenated(bridge, legacy_client):
    batches = [["a"], ["b", "c"], ["d", "e", "f"]]
    with client(legacy_client, bridge) as bc:
        for batch in batches:
            bc.encode(batch, blocking=False)
        concatenated = bc.fetch_all(sort=True, concat=True)
        expected = bc.encode(sum(batches, []))
    assert concatenated.shape == (6, 384)
    assert np.abs(concatenated - expected).max() <= 1e-5


def test_encode_async_list_format_status_and_concurrent_client(bridge, legacy_client, monkeypatch):
    batches = [[f"batch {b} sentence {i}" for i in range(b + 1)] for b in range(4)]
    with client(legacy_client, bridge, output_fmt="list") as bc:
        assert bc.status["client_version"] == "1.10.0" and bc.status["port"] == bridge.port
        as_list = bc.encode(["a list please"])
        responses = list(bc.encode_async(iter(batches), max_num_batch=4, delay=1.0))
    assert isinstance(as_list, list) and len(as_list) == 1 and len(as_list[0]) == 384
    assert sorted(len(r.embedding) for r in responses) == [1, 2, 3, 4]

    # The 1.10 ConcurrentBertClient imports BertClient by its absolute name: make that name the 1.10 module.
    monkeypatch.setitem(sys.modules, "bert_serving.client", legacy_client)
    results = []
    concurrent = legacy_client.ConcurrentBertClient(max_concurrency=4, port=bridge.port, port_out=bridge.port_out,
                                                    timeout=60000)
    # More threads than max_concurrency is the 1.10 client's RuntimeError, so exactly four.
    errors = run_concurrently(lambda i: results.append(concurrent.encode([f"thread {i}"]).shape), range(4))
    concurrent.close()
    assert not errors and results == [(1, 384)] * 4


def test_clones_sharing_an_identity_all_construct_and_encode(bridge, legacy_client):
    identity = str(uuid.uuid4()).encode()
    clones = [client(legacy_client, bridge, identity=identity) for _ in range(5)]
    try:
        shapes = [clone.encode([f"clone {i}"]).shape for i, clone in enumerate(clones)]
    finally:
        for clone in clones:
            clone.close()
    assert shapes == [(1, 384)] * 5


def test_small_requests_jump_the_queue(bridge, legacy_client):
    big = [f"a long queue of work, sentence {i}" for i in range(8 * 256)]  # 8 chunks of max_batch_size
    with client(legacy_client, bridge, ignore_all_checks=True) as bc:
        bc.encode(big, blocking=False)
        bc.encode(["small and urgent"], blocking=False)
        arrival = [response.id for response in bc.fetch()]
    # Without Triton priority the small request would wait behind every chunk of the big one (FIFO).
    assert arrival == [2, 1]


def test_ten_thousand_non_blocking_requests_are_all_answered(bridge, legacy_client):
    with client(legacy_client, bridge, ignore_all_checks=True) as bc:
        for i in range(10_000):
            bc.encode([f"request {i}"], blocking=False)
        time.sleep(2)  # replies pile up unread: the server must hold them, not drop them
        replies = bc.fetch_all(sort=True)
    assert len(replies) == 10_000
    assert all(reply.shape == (1, 384) for reply in replies)


def test_twenty_clients_started_at_once_all_get_their_first_reply(bridge, legacy_client):
    results = []

    def first_contact(index: int) -> None:
        # Odd: the constructor's SHOW_CONFIG is the first request; even: the first encode is (RID 1).
        with client(legacy_client, bridge, ignore_all_checks=index % 2 == 0) as bc:
            results.append(bc.encode(["first"]).shape)

    errors = run_concurrently(first_contact, range(20))
    assert not errors
    assert results == [(1, 384)] * 20


def test_replies_are_multicast_to_every_socket_sharing_an_identity(bridge):
    identity = str(uuid.uuid4()).encode()
    context = zmq.Context()
    try:
        receivers = []
        for _ in range(3):
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, identity)
            sub.setsockopt(zmq.RCVTIMEO, 30000)
            sub.connect(f"tcp://127.0.0.1:{bridge.port_out}")
            receivers.append(sub)
        push = context.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{bridge.port}")
        time.sleep(0.5)
        push.send_multipart([identity, json.dumps(["shared"]).encode(), b"7", b"1"])
        replies = [sub.recv_multipart() for sub in receivers]
    finally:
        context.destroy(linger=0)
    assert all(reply[0] == identity and reply[-1] == b"7" and len(reply) == 4 for reply in replies)
    assert len({reply[2] for reply in replies}) == 1


def test_invalid_request_gets_an_error_reply_and_the_server_keeps_serving(bridge, legacy_client):
    identity = str(uuid.uuid4()).encode()
    context = zmq.Context()
    try:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, identity)
        sub.setsockopt(zmq.RCVTIMEO, 30000)
        sub.connect(f"tcp://127.0.0.1:{bridge.port_out}")
        push = context.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{bridge.port}")
        push.send_multipart([identity, b'["fine", 42]', b"1", b"2"])
        push.send_multipart([identity, b"not json", b"2", b"1"])
        replies = {int(reply[-1]): json.loads(reply[1]) for reply in (sub.recv_multipart(), sub.recv_multipart())}
    finally:
        context.destroy(linger=0)
    assert replies[1]["type"] == "InvalidRequest" and "sentence 1" in replies[1]["error"]
    assert replies[2]["type"] == "InvalidRequest" and "JSON" in replies[2]["error"]
    with client(legacy_client, bridge) as bc:
        assert bc.encode(["still serving"]).shape == (1, 384)


def test_terminate_command_stops_the_server(start_bridge):
    terminate_command = Path(sys.executable).parent / "bert-serving-terminate"
    with start_bridge() as bridge:
        terminate = subprocess.run([str(terminate_command), "-port", str(bridge.port)], capture_output=True,
                                   text=True, timeout=30)
        assert terminate.returncode == 0, terminate.stderr
        assert bridge.process.wait(60) == 0
        assert "received TERMINATION" in bridge.log()


def test_triton_down_gives_a_readable_error_and_service_resumes(default_export, start_bridge, legacy_client,
                                                               tmp_path):
    from bert_bridge.triton.server import EmbeddedTriton

    triton = EmbeddedTriton(model_repository=default_export.repository, models=[default_export.name],
                            cache_dir=tmp_path, log_path=tmp_path / "triton.log", grpc_port=free_port())
    triton.start()
    try:
        with start_bridge("-model_dir", str(default_export.folder), "--triton-url",
                          f"127.0.0.1:{triton.grpc_port}") as bridge:
            with client(legacy_client, bridge) as bc:
                before = bc.encode(["the service is up"])
                triton.stop()
                started = time.monotonic()
                with pytest.raises(TypeError, match="Triton at 127.0.0.1:.* is unavailable"):
                    bc.encode(["the service is down"])
                assert time.monotonic() - started < 30
                triton.start()
                deadline = time.monotonic() + 60
                while True:
                    try:
                        after = bc.encode(["the service is up"])
                        break
                    except TypeError:
                        assert time.monotonic() < deadline, "the bridge did not serve again after Triton came back"
                        time.sleep(0.5)
    finally:
        triton.stop()
    assert np.abs(after - before).max() <= 1e-5
