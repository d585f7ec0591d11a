"""A server that never answers: every wait ends with BertTimeoutError (a TimeoutError) on time, and the client is
still usable afterwards. The server is a real PULL + XPUB pair bound on free ports that reads nothing back."""
from __future__ import annotations

import time

import pytest

from bert_serving.client import BertClient, BertTimeoutError
from bert_serving.client.protocol import decode_request

from scripted_server import silent_server

TIMEOUT_MS = 300


def raises_on_time(call):
    """Run ``call``; it must raise BertTimeoutError after about TIMEOUT_MS (not sooner, not much later)."""
    started = time.monotonic()
    with pytest.raises(BertTimeoutError) as raised:
        call()
    elapsed = time.monotonic() - started
    assert TIMEOUT_MS / 1000 * 0.9 <= elapsed < TIMEOUT_MS / 1000 + 1.0, elapsed
    assert isinstance(raised.value, TimeoutError) and raised.value.timeout_ms == TIMEOUT_MS
    return raised.value


def test_constructor_times_out():
    with silent_server() as (port, port_out, pull):
        raises_on_time(lambda: BertClient(port=port, port_out=port_out, timeout=TIMEOUT_MS))
        assert decode_request(pull.recv_multipart()).message == b"SHOW_CONFIG"  # it did ask


def test_server_config_and_status_time_out():
    with silent_server() as (port, port_out, _):
        with BertClient(port=port, port_out=port_out, ignore_all_checks=True, timeout=TIMEOUT_MS) as client:
            raises_on_time(lambda: client.server_config)
            raises_on_time(lambda: client.server_status)


def test_encode_fetch_and_fetch_all_time_out_and_the_client_stays_usable():
    with silent_server() as (port, port_out, pull):
        with BertClient(port=port, port_out=port_out, ignore_all_checks=True, timeout=TIMEOUT_MS) as client:
            error = raises_on_time(lambda: client.encode(["hello world"]))
            assert error.request_ids == (1,)
            assert client.status["num_pending_request"] == 0  # abandoned: a late reply will be ignored

            client.encode(["one"], blocking=False)
            client.encode(["two"], blocking=False)
            raises_on_time(lambda: list(client.fetch()))
            assert client.status["num_pending_request"] == 0

            client.encode(["three"], blocking=False)
            error = raises_on_time(lambda: client.fetch_all())
            assert error.request_ids == (4,)
            assert client.fetch_all() is None  # nothing left pending
            raises_on_time(lambda: client.encode(["still usable"]))  # and still bounded by the timeout
            sent = [decode_request(pull.recv_multipart()) for _ in range(5)]
            assert [r.texts() for r in sent] == [["hello world"], ["one"], ["two"], ["three"], ["still usable"]]


def test_a_large_streamed_encode_times_out_too():
    with silent_server() as (port, port_out, _):
        with BertClient(port=port, port_out=port_out, ignore_all_checks=True, timeout=TIMEOUT_MS) as client:
            error = raises_on_time(lambda: client.encode([f"sentence {i}" for i in range(5000)]))
            assert len(error.request_ids) == client.max_in_flight  # the chunks in flight, all abandoned
            assert client.status["num_pending_request"] == 0


def test_encode_async_times_out():
    with silent_server() as (port, port_out, _):
        with BertClient(port=port, port_out=port_out, ignore_all_checks=True, timeout=TIMEOUT_MS) as client:
            raises_on_time(lambda: list(client.encode_async(iter([["a"], ["b"]]))))
            assert client.status["num_pending_request"] == 0
