"""The TensorRT target: built from the ONNX file and checked against it, where TensorRT and a GPU exist."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from export_oracle import TINY, make_batch, run_onnx

from bert_exporter.targets import cuda_device_count
from bert_exporter.triton_config import tensorrt_profile


def tensorrt_missing_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (the plan is built on a GPU host: docs/EXPORT.md)"
    if cuda_device_count() == 0:
        return "no CUDA GPU on this machine (the plan is built on a GPU host: docs/EXPORT.md)"
    return None


def test_profile_covers_what_the_bridge_sends():
    from bert_exporter.options import ExportOptions

    options = ExportOptions(model_dir=".", output=".", target="tensorrt", max_seq_len=64, max_batch_size=128)
    for name, (minimum, optimum, maximum) in tensorrt_profile(options).items():
        assert minimum == (1, 1) and maximum == (128, 64), name
        assert minimum <= optimum <= maximum


@pytest.mark.skipif(tensorrt_missing_reason() is not None, reason=str(tensorrt_missing_reason()))
def test_tensorrt_plan_matches_onnx(export_tiny):
    import tensorrt as trt
    import torch  # device buffers; the test extra installs torch

    folder = export_tiny("hf", target="tensorrt", fp16=True, max_seq_len=16, max_batch_size=8)
    assert (folder / "1" / "model.plan").stat().st_size > 0
    feeds = make_batch([16, 9, 5], 16, vocab_size=TINY["vocab_size"])
    expected = run_onnx(folder / "1" / "model.onnx", feeds).astype(np.float32)

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine((folder / "1" / "model.plan").read_bytes())
    context = engine.create_execution_context()
    tensors = {name: torch.from_numpy(value).cuda() for name, value in feeds.items()}
    for name, tensor in tensors.items():
        context.set_input_shape(name, tuple(tensor.shape))
    tensors["encodes"] = torch.empty(tuple(context.get_tensor_shape("encodes")), dtype=torch.float16, device="cuda")
    for name, tensor in tensors.items():
        context.set_tensor_address(name, tensor.data_ptr())
    assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    actual = tensors["encodes"].float().cpu().numpy()
    cosine = (actual * expected).sum(1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.999
