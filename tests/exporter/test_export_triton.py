"""The embedded target loaded and served by a real tritonserver (the Triton 2.51 bundled in nvidia-pytriton).

The server is started through the bridge's supervisor (bert_bridge.triton.server), the way `bert-serving-start` does;
requests go through tritonclient's gRPC client with and without a priority, several in flight so the dynamic
batcher merges them.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from export_oracle import TINY, make_batch, run_onnx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_hf):
    from bert_bridge.triton.server import EmbeddedTriton

    from bert_exporter.export import ExportOptions, export_model

    repository = tmp_path_factory.mktemp("served-repository")
    common = dict(model_dir=tiny_hf.model_dir, output=repository, target="embedded", max_batch_size=8)
    export_model(ExportOptions(name="mean", pooling_layer=(-1, -2), **common))
    export_model(ExportOptions(name="tokens", pooling_strategy="NONE", max_seq_len=None, **common))
    server = EmbeddedTriton(model_repository=repository, models=["mean", "tokens"],
                            cache_dir=tmp_path_factory.mktemp("triton-cache"),
                            log_path=repository.parent / "tritonserver.log", startup_timeout_s=180)
    endpoints = server.start()
    try:
        yield repository, endpoints.grpc_url
    finally:
        server.stop()


def infer(url: str, model: str, feeds: dict, priority: int = 0) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        inputs = []
        for name, value in feeds.items():
            tensor = grpcclient.InferInput(name, list(value.shape), "INT32")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        result = client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput("encodes")], priority=priority)
        return result.as_numpy("encodes")


def test_served_outputs_equal_the_onnx_model(served):
    repository, url = served
    batches = [make_batch([10, 4, 7], 10, vocab_size=TINY["vocab_size"], seed=seed) for seed in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(lambda item: infer(url, "mean", item[1], priority=1 + item[0] % 2),
                                enumerate(batches)))
    for feeds, output in zip(batches, outputs):
        np.testing.assert_allclose(output, run_onnx(repository / "mean" / "1" / "model.onnx", feeds), atol=1e-5)


def test_served_token_vectors_for_any_length(served):
    repository, url = served
    for width in (5, 19):
        feeds = make_batch([width, 3], width, vocab_size=TINY["vocab_size"], seed=width)
        output = infer(url, "tokens", feeds)
        assert output.shape == (2, width, TINY["hidden_size"])
        assert np.all(output[1, 3:] == 0)
        np.testing.assert_allclose(output, run_onnx(repository / "tokens" / "1" / "model.onnx", feeds), atol=1e-5)
