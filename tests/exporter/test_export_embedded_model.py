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


@pytest.fixture
def embedded_model(export_tiny, monkeypatch):
    folder = export_tiny("hf", target="embedded", pooling_strategy="REDUCE_MAX", pooling_layer=[-1])
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location("embedded_model_under_test", folder / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_repository": str(folder), "model_version": "1",
                      "model_config": json.dumps({"name": folder.name})})
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
