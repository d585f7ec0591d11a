"""Request limits with clear errors (issue 10): per request (sentences, ZeroMQ bytes, characters per sentence) and
across all clients (sentences and bytes in flight), over ZeroMQ and HTTP, on one bridge started with small limits.
Every refusal names the limit and its flag; over the in-flight limits a request is refused at once (ServerBusy, HTTP
429), never queued. The defaults serve a 50,000-sentence request."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import zmq

from bert_bridge.core.admission import Admission
from bert_bridge.config import parse_args
from bert_bridge.errors import RequestTooLarge, ServerBusy
from bert_serving.client.protocol import decode_reply, encode_request
from harness import free_port

MAX_REQUEST_SENTENCES = 1000
MAX_INFLIGHT_SENTENCES = 1200
MAX_INFLIGHT_BYTES = 15_000
MAX_SENTENCE_CHARS = 1000
ZMQ_MAX_REQUEST_BYTES = 16_000
# A request that is admitted alone and keeps the limits busy for seconds: 1,000 sentences of 10 characters.
OCCUPYING = [f"busy {i:05d}" for i in range(MAX_REQUEST_SENTENCES)]
REPLY_TIMEOUT_S = 120


def post_json(url: str, body) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of a POST, whatever the status."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REPLY_TIMEOUT_S) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


class RawClient:
    """A PUSH and a SUB socket speaking the 1.10 protocol frame by frame, so requests go out in a known order."""

    def __init__(self, port: int, port_out: int, identity: bytes):
        self.context = zmq.Context()
        self.identity = identity
        self.push = self.context.socket(zmq.PUSH)
        self.sub = self.context.socket(zmq.SUB)
        for socket in (self.push, self.sub):
            socket.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, identity)
        self.sub.connect(f"tcp://127.0.0.1:{port_out}")
        self.push.connect(f"tcp://127.0.0.1:{port}")
        self.request_id = 0
        self.send(b"SHOW_CONFIG")  # answered once the subscription has arrived
        assert isinstance(self.receive().payload, dict)

    def send(self, texts) -> int:
        self.request_id += 1
        self.push.send_multipart(encode_request(self.identity, texts, self.request_id))
        return self.request_id

    def receive(self):
        assert self.sub.poll(REPLY_TIMEOUT_S * 1000), "no reply"
        return decode_reply(self.sub.recv_multipart())

    def close(self):
        self.context.destroy(0)


@pytest.fixture(scope="module")
def limited(start_bridge):
    http_port = free_port()
    flags = ("-http_port", str(http_port), "--max-request-sentences", str(MAX_REQUEST_SENTENCES),
             "--max-inflight-sentences", str(MAX_INFLIGHT_SENTENCES), "--max-inflight-bytes", str(MAX_INFLIGHT_BYTES),
             "--max-sentence-chars", str(MAX_SENTENCE_CHARS), "--zmq-max-request-bytes", str(ZMQ_MAX_REQUEST_BYTES))
    with start_bridge(*flags) as bridge:
        client = RawClient(bridge.port, bridge.port_out, b"limits-test")
        yield bridge, client, f"http://127.0.0.1:{http_port}"
        client.close()


def error_of(reply) -> tuple[str, str]:
    assert reply.error is not None, f"expected an error reply, got {reply.payload!r}"
    return reply.error_type, reply.error


@pytest.mark.slow
@pytest.mark.parametrize("texts, kind, flag", [
    (["s"] * (MAX_REQUEST_SENTENCES + 1), "RequestTooLarge", "--max-request-sentences"),
    (["fine", "x" * (MAX_SENTENCE_CHARS + 1)], "RequestTooLarge", "--max-sentence-chars"),
    ([["token"] * 400] * 3, "RequestTooLarge", "--max-sentence-chars"),  # a token list's characters count too
    (["y" * 900] * 20, "RequestTooLarge", "--zmq-max-request-bytes"),
])
def test_a_request_over_a_limit_gets_an_error_naming_the_limit_and_its_flag(limited, texts, kind, flag):
    _, client, _ = limited
    request_id = client.send(texts)
    reply = client.receive()
    assert reply.request_id == request_id
    error_type, message = error_of(reply)
    assert error_type == kind and flag in message, message
    client.send(["the same client is served afterwards"])
    assert client.receive().payload.shape == (1, 384)


@pytest.mark.slow
def test_over_http_the_per_request_limits_are_413_naming_the_flag(limited):
    _, _, url = limited
    status, _, body = post_json(f"{url}/encode", {"id": 1, "texts": ["s"] * (MAX_REQUEST_SENTENCES + 1)})
    assert status == 413 and "--max-request-sentences" in body["description"], body
    status, _, body = post_json(f"{url}/v1/embeddings", {"input": ["z" * (MAX_SENTENCE_CHARS + 1)], "model": "m"})
    assert status == 413 and "--max-sentence-chars" in body["error"]["message"], body


@pytest.mark.slow
def test_over_the_in_flight_limits_a_request_is_refused_at_once_not_queued(limited):
    bridge, client, url = limited
    occupying_id = client.send(OCCUPYING)  # admitted alone: nothing else is in flight
    # Sent after it on the same socket, so admitted (or not) after it, while it is still being encoded.
    too_many_id = client.send(["a"] * 300)  # 1,300 sentences in flight > 1,200; 10,300 bytes is fine
    too_big_id = client.send(["b" * 600] * 10)  # 16,000 bytes in flight > 15,000; 1,010 sentences is fine
    replies = {}
    while len(replies) < 2:
        reply = client.receive()
        replies[reply.request_id] = reply
    assert occupying_id not in replies, "the probes were answered before the occupying request finished"
    kind, message = error_of(replies[too_many_id])
    assert kind == "ServerBusy" and "--max-inflight-sentences" in message, message
    kind, message = error_of(replies[too_big_id])
    assert kind == "ServerBusy" and "--max-inflight-bytes" in message, message
    # Still busy: HTTP gets 429 with Retry-After, and the reason.
    status, headers, body = post_json(f"{url}/encode", {"id": 7, "texts": ["c"] * 300})
    assert status == 429 and headers["retry-after"] and "--max-inflight-sentences" in body["description"], body
    occupying = client.receive()
    assert occupying.request_id == occupying_id and occupying.payload.shape == (len(OCCUPYING), 384)
    # Once the load is gone the same request is served: the occupying reply's bytes count until libzmq has sent them,
    # which takes a moment after the client has read it.
    deadline = time.monotonic() + 10
    while True:
        client.send(["b" * 600] * 10)
        reply = client.receive()
        if reply.error is None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reply.error is None and np.isfinite(reply.payload).all(), reply.payload
    assert bridge.process.poll() is None


def test_defaults_admit_a_50000_sentence_request_and_state_themselves_in_the_help(capsys):
    config = parse_args([])
    sentences = [f"sentence number {i} of a large request, about as long as a typical one" for i in range(50_000)]
    assert len(json.dumps(sentences).encode()) < config.zmq_max_request_bytes
    admission = Admission(config)
    with admission.admit(sentences):
        assert admission.sentences_in_flight == 50_000
        with admission.admit(sentences):  # and a second one beside it
            pass
    assert admission.sentences_in_flight == 0 and admission.bytes_in_flight == 0
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--zmq-max-request-bytes", config.zmq_max_request_bytes),
                          ("--max-request-sentences", config.max_request_sentences),
                          ("--max-sentence-chars", config.max_sentence_chars),
                          ("--max-inflight-sentences", config.max_inflight_sentences),
                          ("--max-inflight-bytes", config.max_inflight_bytes)):
        assert flag in help_text and f"(default: {default})" in help_text, flag


def test_admission_counts_replies_and_admits_a_request_alone_whatever_its_size():
    admission = Admission(parse_args(["--max-inflight-bytes", "100", "--max-inflight-sentences", "2"]))
    with admission.admit(["x" * 500] * 5):  # alone: admitted, so every request within the per-request limits is
        with pytest.raises(ServerBusy, match="--max-inflight-sentences"):
            with admission.admit(["y"]):
                pass
    admission.hold_reply(150)  # an unsent reply fills the byte budget
    with pytest.raises(ServerBusy, match="--max-inflight-bytes"):
        with admission.admit(["y"]):
            pass
    admission.release_reply(150)
    with admission.admit(["y"]):
        pass
    with pytest.raises(RequestTooLarge, match="--max-sentence-chars"):
        with Admission(parse_args(["--max-sentence-chars", "3"])).admit(["abcd"]):
            pass
