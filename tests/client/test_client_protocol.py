"""protocol.py: frames written by one side are read back identically by the other."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bert_serving.client import BertClientError, protocol


def test_request_round_trip_of_sentences_and_tokens():
    for texts in (["hello world", "héllo ||| 世界"], [["hello", "world"], ["good"]]):
        frames = protocol.encode_request(b"client-1", texts, 7)
        request = protocol.decode_request(frames)
        assert (request.identity, request.request_id, request.length) == (b"client-1", b"7", len(texts))
        assert not request.is_command
        assert request.texts() == texts


def test_command_request():
    frames = protocol.encode_request(b"id", protocol.SHOW_CONFIG, 1)
    assert frames == [b"id", b"SHOW_CONFIG", b"1", b"0"]
    assert protocol.decode_request(frames).is_command


@pytest.mark.parametrize("frames", [[b"id", b"[]", b"1"], [b"id", b"[]", b"x", b"1"], [b"id", b"[]", b"1", b"-1"]])
def test_malformed_requests_are_protocol_errors(frames):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_request(frames)


def test_request_payload_must_be_a_json_array():
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_request([b"id", b'{"a": 1}', b"1", b"1"]).texts()
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_request([b"id", b"\xff", b"1", b"1"]).texts()


@pytest.mark.parametrize("dtype", ["float32", "float16", ">f4"])
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 6)])
def test_ndarray_reply_round_trip(dtype, shape):
    array = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    tokens = [["[CLS]", "a", "[SEP]"]] * shape[0]
    frames = protocol.encode_ndarray_reply(b"id", array, b"12", tokens)
    assert len(frames) == 4 and frames[-1] == b"12"
    reply = protocol.decode_reply([bytes(frame) for frame in frames])
    assert (reply.identity, reply.request_id, reply.tokens, reply.error) == (b"id", 12, tokens, None)
    np.testing.assert_array_equal(reply.payload, array)
    assert reply.payload.flags.writeable  # 1.10 handed out read-only arrays


def test_ndarray_reply_is_little_endian_as_the_original():
    frames = protocol.encode_ndarray_reply(b"id", np.ones((1, 2), dtype=">f4"), b"1")
    assert json.loads(frames[1])["dtype"] == "float32"


def test_json_and_error_replies():
    reply = protocol.decode_reply(protocol.encode_json_reply(b"id", {"max_seq_len": 25}, b"3"))
    assert (reply.payload, reply.request_id, reply.error) == ({"max_seq_len": 25}, 3, None)
    error = protocol.decode_reply(protocol.encode_error_reply(b"id", "Triton is down", "BackendUnavailable", b"4"))
    assert (error.error, error.error_type, error.request_id) == ("Triton is down", "BackendUnavailable", 4)


def test_error_reply_makes_the_1_10_decoding_fail_with_the_message():
    # What the unmodified client does with frame 1 of an error reply: np.frombuffer(..., dtype=header['dtype']).
    header = json.loads(protocol.encode_error_reply(b"id", "Triton is down", "BackendUnavailable", b"4")[1])
    with pytest.raises(TypeError, match="Triton is down"):
        np.frombuffer(b"", dtype=str(header["dtype"]))


@pytest.mark.parametrize("frames", [
    [b"id", b"{}"],  # too few frames
    [b"id", b"{}", b"not-a-number"],
    [b"id", b"not json", b"1"],
    [b"id", b"[1, 2]", b"1"],  # header not an object
    [b"id", b'{"shape": [1, 2]}', b"\x00" * 8, b"1"],  # no dtype
    [b"id", b'{"dtype": "float32", "shape": [3, 2]}', b"\x00" * 8, b"1"],  # bytes do not fit the shape
    [b"id", b'{"dtype": "no-such-type", "shape": [1]}', b"\x00" * 4, b"1"],
])
def test_malformed_replies_are_protocol_errors_of_the_client_tree(frames):
    with pytest.raises(protocol.ProtocolError) as raised:
        protocol.decode_reply(frames)
    assert isinstance(raised.value, BertClientError) and isinstance(raised.value, ValueError)


def test_reply_request_id():
    assert protocol.reply_request_id([b"id", b"{}", b"17"]) == 17
    assert protocol.reply_request_id([b"id", b"{}", b"x"]) is None
    assert protocol.reply_request_id([b"id"]) is None


def error_messages(count: int = 3000) -> list[str]:
    """Messages such as Triton and gRPC write them: commas, digits, brackets, quotes, colons, non-ASCII."""
    import random

    pieces = [",", ", ", "0", "12", "(", ")", "[", "]", "{", "}", "'", '"', ":", ";", " ", "<", ">", "|", "f8", "i4",
              "U", "S10", "(2,3)", "ipv4:127.0.0.1:8001", "é", "世界", "\n", "\t", "=", "*", "->", "a", "int32"]
    rng = random.Random(20261129)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(count)]


@pytest.mark.parametrize("error_type", ["InvalidRequest", "BackendError", "ShuttingDown"])
def test_an_error_reply_always_makes_numpy_raise_type_error(error_type):
    """The 1.10 client hands the reply's dtype to np.frombuffer: whatever the message, that must raise TypeError
    ("data type ... not understood", as docs/SERVER.md says), never ValueError or a parsed dtype."""
    for message in error_messages() + ["failed to connect to all addresses; last error: UNKNOWN: ipv4:1.2.3.4:1, x"]:
        header = json.loads(protocol.encode_error_reply(b"id", message, error_type, b"1")[1])
        assert header["error"] == message  # our client reads the message unchanged
        with pytest.raises(TypeError, match="not understood"):
            np.frombuffer(b"", dtype=str(header["dtype"]))
