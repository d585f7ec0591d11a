"""Unit test of the embedded target's ``model.py`` (templates/model.py) with a stand-in for Triton's pb_utils.

The real python backend is exercised where tritonserver runs (test_export_triton.py); here we check the batching
logic: requests of one execute() are concatenated, run once per shape, and split back in order.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest
from export_oracle import TINY, make_batch, run_onnx


class FakeTensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


def fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor
    module.InferenceResponse = FakeResponse
    module.TritonError = lambda message: message
    module.get_input_tensor_by_name = lambda request, name: FakeTensor(name, request[name])
    return module


def load_model(export_tiny, monkeypatch, **config):
    """The exported model.py, initialized as Triton would with ``config`` as its model config."""
    folder = export_tiny("hf", target="embedded", pooling_strategy="REDUCE_MAX", pooling_layer=[-1])
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location("embedded_model_under_test", folder / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_repository": str(folder), "model_version": "1",
                      "model_config": json.dumps({"name": folder.name, **config})})
    return model, folder


@pytest.fixture
def embedded_model(export_tiny, monkeypatch):
    model, folder = load_model(export_tiny, monkeypatch)
    yield model, folder
    model.finalize()


def test_execute_batches_requests_and_splits_in_order(embedded_model):
    model, folder = embedded_model
    requests = [make_batch([7, 3], 7, vocab_size=TINY["vocab_size"], seed=1),
                make_batch([5], 5, vocab_size=TINY["vocab_size"], seed=2),  # another length: its own run
                make_batch([7, 6, 2 + 2], 7, vocab_size=TINY["vocab_size"], seed=3)]

    responses = model.execute(requests)

    assert len(responses) == len(requests)
    for request, response in zip(requests, responses):
        assert response.error is None
        (tensor,) = response.output_tensors
        assert tensor.name == "encodes"
        np.testing.assert_allclose(tensor.as_numpy(), run_onnx(folder / "1" / "model.onnx", request), atol=1e-5)


def test_a_failing_run_answers_each_request_with_an_error(embedded_model):
    model, _ = embedded_model
    bad = make_batch([4], 4, vocab_size=TINY["vocab_size"])
    bad["input_ids"] = bad["input_ids"].astype(np.int64)  # the graph takes int32: onnxruntime refuses
    good = make_batch([6], 6, vocab_size=TINY["vocab_size"])

    bad_response, good_response = model.execute([bad, good])

    assert bad_response.error and not bad_response.output_tensors
    assert good_response.error is None


def test_small_requests_are_packed_and_a_large_one_sliced_with_every_row_in_place(export_tiny, monkeypatch):
    """positions_per_run from config.pbtxt: 20 positions here, so two 2x7 requests cannot share a call and the 5x7
    one runs in slices of 2 rows; a 1x4 and a 2x4 share one. Every reply still equals the model run on that request."""
    model, folder = load_model(export_tiny, monkeypatch, parameters={"positions_per_run": {"string_value": "20"}})
    vocab = TINY["vocab_size"]
    requests = [make_batch([7, 5], 7, vocab_size=vocab, seed=1), make_batch([7, 7], 7, vocab_size=vocab, seed=2),
                make_batch([7, 6, 5, 4, 3], 7, vocab_size=vocab, seed=3), make_batch([4], 4, vocab_size=vocab, seed=4),
                make_batch([4, 2], 4, vocab_size=vocab, seed=5)]
    calls = []
    run = model.session.run
    monkeypatch.setattr(model, "session", types.SimpleNamespace(
        run=lambda names, feeds: calls.append(feeds["input_ids"].shape) or run(names, feeds)))

    responses = model.execute(requests)

    assert calls == [(2, 7), (2, 7), (2, 7), (2, 7), (1, 7), (3, 4)]
    for request, response in zip(requests, responses):
        np.testing.assert_allclose(response.output_tensors[0].as_numpy(), run_onnx(folder / "1" / "model.onnx", request),
                                   atol=1e-5)
