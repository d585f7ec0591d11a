"""What the client refuses before sending anything, and how it says so: typed errors that are also the builtins."""
from __future__ import annotations

import pytest

from bert_serving.client import (BertClient, BertClientError, BertTimeoutError, InputError, InputTypeError,
                                 InputValueError, ServerError, VersionMismatchError)


@pytest.fixture
def offline_client():
    # ignore_all_checks: nothing is sent when constructing, so no server is needed to test validation.
    with BertClient(port=1, port_out=2, ignore_all_checks=True, timeout=100) as client:
        yield client


@pytest.mark.parametrize("texts, error", [
    ("a sentence", InputTypeError),
    ([], InputValueError),
    ([""], InputValueError),
    (["fine", "   "], InputValueError),
    (["fine", 3], InputTypeError),
    (["fine", None], InputTypeError),
    ([["already", "tokenized"]], InputTypeError),  # needs is_tokenized=True
    (["\ud800 lone surrogate"], InputValueError),
])
def test_invalid_sentences(offline_client, texts, error):
    with pytest.raises(error):
        offline_client.encode(texts)
    with pytest.raises(error):
        offline_client.encode(texts, blocking=False)
    assert offline_client.status["num_request"] == 0  # nothing was sent


@pytest.mark.parametrize("texts, error", [
    (["not", "token", "lists"], InputTypeError),
    ([], InputValueError),
    ([[]], InputValueError),
    ([["ok"], ["", "x"]], InputValueError),
    ([["ok"], [" "]], InputValueError),
    ([["ok", 1]], InputTypeError),
])
def test_invalid_token_lists(offline_client, texts, error):
    with pytest.raises(error):
        offline_client.encode(texts, is_tokenized=True)
    assert offline_client.status["num_request"] == 0


def test_input_errors_are_builtin_errors_of_the_client_tree(offline_client):
    with pytest.raises(ValueError) as empty:
        offline_client.encode([])
    with pytest.raises(TypeError) as not_a_list:
        offline_client.encode("text")
    for error in (empty.value, not_a_list.value):
        assert isinstance(error, InputError) and isinstance(error, BertClientError)


def test_error_tree():
    assert issubclass(BertTimeoutError, TimeoutError) and issubclass(BertTimeoutError, BertClientError)
    assert issubclass(VersionMismatchError, AttributeError)  # what 1.10 raised on a version mismatch
    error = ServerError("Triton is down", error_type="BackendUnavailable", request_id=3)
    assert (error.message, error.type, error.request_id) == ("Triton is down", "BackendUnavailable", 3)
    assert "Triton is down" in str(error) and isinstance(error, BertClientError)


@pytest.mark.parametrize("identity, expected", [("clone-1", b"clone-1"), (b"clone-1", b"clone-1"),
                                                ("żółw", "żółw".encode())])
def test_identity_str_or_bytes(identity, expected):
    with BertClient(port=1, port_out=2, identity=identity, ignore_all_checks=True) as client:
        assert client.identity == expected == client.status["identity"]


def test_default_identity_is_a_fresh_uuid():
    with BertClient(port=1, port_out=2, ignore_all_checks=True) as a, \
            BertClient(port=1, port_out=2, identity="", ignore_all_checks=True) as b:
        assert len(a.identity) == len(b.identity) == 36 and a.identity != b.identity


@pytest.mark.parametrize("kwargs, error", [({"identity": 12}, InputTypeError), ({"output_fmt": "csv"}, InputValueError),
                                           ({"max_in_flight": 0}, InputValueError)])
def test_invalid_arguments(kwargs, error):
    with pytest.raises(error):
        BertClient(port=1, port_out=2, ignore_all_checks=True, **kwargs)


def test_status_of_a_fresh_client(offline_client):
    status = offline_client.status
    assert status["num_request"] == 0 and status["num_pending_request"] == 0 and status["pending_request"] == set()
    assert (status["port"], status["port_out"], status["server_ip"], status["timeout"]) == (1, 2, "localhost", 100)
    assert status["client_version"].startswith("1.10.0")
