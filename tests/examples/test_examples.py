"""Every script in examples/ runs to completion against a real service, and what it prints is checked.

One bridge on the packaged model (with HTTP) serves the examples that take a running server; one with pooling NONE
serves the token-level ones; the fine-tuning and layer examples start their own servers through BertServer.
"""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from harness import REPO_ROOT, free_port

pytestmark = pytest.mark.slow

EXAMPLES = REPO_ROOT / "examples"


def run_example(name: str, *arguments: str, timeout_s: float = 300) -> str:
    completed = subprocess.run([sys.executable, str(EXAMPLES / name), *arguments], cwd=REPO_ROOT, text=True,
                               capture_output=True, timeout=timeout_s)
    assert completed.returncode == 0, f"{name} failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


@pytest.fixture(scope="module")
def served(http_served):
    """The packaged model with default flags, ZeroMQ and HTTP: `make serve` plus -http_port (the session's bridge with
    HTTP, tests/conftest.py)."""
    bridge, http_port = http_served
    return bridge, ["--port", str(bridge.port), "--port_out", str(bridge.port_out)], http_port


@pytest.fixture(scope="module")
def token_level(start_bridge):
    with start_bridge("-pooling_strategy", "NONE", "-show_tokens_to_client") as bridge:
        yield ["--port", str(bridge.port), "--port_out", str(bridge.port_out)]


@pytest.mark.parametrize("query, expected", [
    ("is it possible to run the server on a machine without a GPU", "Can I run the server side on CPU-only machine?"),
    ("how do I serve my own fine-tuned BERT", "Can I use my own fine-tuned BERT model?"),
])
def test_semantic_search_ranks_the_paraphrased_question_first(served, query, expected):
    output = run_example("semantic_search.py", query, "--top-k", "3", *served[1])
    assert re.search(r"^\d+ questions loaded", output, re.M)
    ranked = re.findall(r"^> (-?[\d.]+)\t(.+)$", output, re.M)
    assert len(ranked) == 3
    assert ranked[0][1] == expected, output
    scores = [float(score) for score, _ in ranked]
    assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0


def test_token_embeddings_have_a_vector_per_token_and_zero_padding(token_level):
    output = run_example("token_embeddings.py", *token_level)
    assert "shape (2, 25, 384)" in output
    rows = re.findall(r"^\s+(\d+) (\S+)\s+\|v\| = ([\d.]+)$", output, re.M)
    first = [(token, float(norm)) for position, token, norm in rows[:5]]
    assert [token for token, _ in first] == ["[CLS]", "hey", "you", "[SEP]", "(padding)"]
    assert all(norm > 0 for _, norm in first[:4]) and first[4][1] == 0.0


def test_own_tokenizer_rows_hold_only_the_given_tokens(token_level):
    output = run_example("own_tokenizer.py", *token_level)
    assert "shape (2, 25, 384)" in output
    assert "'hello world!': 4 of 25 rows hold tokens" in output
    assert "'good day': 4 of 25 rows hold tokens" in output


def test_async_encoding_receives_every_batch(served):
    output = run_example("async_encoding.py", "--num-batches", "6", *served[1])
    assert output.count("received 4 x 384") == 6
    assert "6 batches encoded" in output


def test_broadcast_reaches_both_clones(served):
    output = run_example("broadcast.py", *served[1])
    for receiver in ("sender", "clone-client-0", "clone-client-1"):
        assert output.count(f"{receiver}: received 3 x 384") == 3, output


def test_tf_data_pipeline_encodes_every_line(served):
    output = run_example("tf_data_pipeline.py", *served[1])
    assert "feature (8, 384)" in output
    assert "48 sentences encoded through tf.data" in output


def test_text_classifier_beats_chance(served):
    output = run_example("text_classifier.py", *served[1])
    accuracy, chance = map(float, re.search(r"accuracy ([\d.]+) \(chance ([\d.]+)\)", output).groups())
    assert chance == 0.25 and accuracy >= 0.75, output


def test_tfrecord_reads_back_what_it_wrote(served, tmp_path):
    output_file = tmp_path / "encodings.tfrecord"
    output = run_example("tfrecord.py", "--output", str(output_file), *served[1])
    assert output_file.stat().st_size > 48 * 384 * 4
    assert "wrote 48 encodings of shape (384,)" in output
    assert "read back 48 encodings of shape (384,): identical to what was written" in output


def test_http_json_encodes_and_reports_status(served):
    output = run_example("http_json.py", "--http_port", str(served[2]))
    assert "/encode: id 123, status 200, 2 vectors of 384 floats" in output
    assert "/encode tokenized: id 124, 2 vectors" in output
    assert re.search(r"/v1/embeddings: 2 embeddings of 384 floats, \d+ tokens", output)
    assert re.search(r"/status/server: [1-9]\d* data requests so far, pooling_layer \[-2\], server_version 1.10.0",
                     output)


def test_dashboard_shows_the_status_and_serves_the_page(served):
    output = run_example("dashboard.py", *served[1], "--http_port", str(served[2]))
    assert '"server_version": "1.10.0"' in output and '"statistic"' in output
    assert re.search(r"/status/server over HTTP: [1-9]\d* data requests", output)
    assert re.search(r"dashboard: http://localhost:\d+/dashboard \(200, \d+ bytes of HTML\)", output)


def transformers_with_checkpoint(prefix):
    """transformers' BertModel for the packaged model, with every bert/ tensor of a TF checkpoint loaded into it."""
    import tensorflow as tf
    import torch
    from transformers import BertModel

    from bert_exporter.options import packaged_model_dir

    model = BertModel.from_pretrained(str(packaged_model_dir())).eval()
    reader = tf.train.load_checkpoint(str(prefix))
    state = {}
    for name in reader.get_variable_to_shape_map():
        if not name.startswith("bert/"):
            continue
        tensor = reader.get_tensor(name)
        hf = re.sub(r"layer_(\d+)", r"layer.\1", name[len("bert/"):]).replace("/", ".")
        if hf.endswith(".kernel"):
            hf, tensor = hf[:-len("kernel")] + "weight", tensor.T
        hf = hf.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if hf.startswith("embeddings.") and not hf.startswith("embeddings.LayerNorm"):
            hf += ".weight"
        state[hf] = torch.from_numpy(np.ascontiguousarray(tensor))
    missing = set(model.state_dict()) - set(state) - {"embeddings.position_ids"}
    assert not {name for name in missing if not name.startswith("pooler.")}, missing
    model.load_state_dict(state, strict=False)
    return model


def test_fine_tuned_model_is_served_end_to_end(tmp_path, hf_model):
    import torch

    vectors_out = tmp_path / "served.npy"
    output = run_example("fine_tuned_model.py", "--output", str(tmp_path), "--steps", "3", "--vectors-out",
                         str(vectors_out), "--port", str(free_port()), "--port_out", str(free_port()))
    losses = [float(loss) for loss in re.findall(r"^step \d: loss ([\d.]+)$", output, re.M)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert (tmp_path / "model.ckpt-3.index").is_file()
    to_tuned = float(re.search(r"fine-tuned model's own vectors: max \|difference\| (\S+)", output).group(1))
    to_pretrained = float(re.search(r"pretrained model's vectors:\s+max \|difference\| (\S+)", output).group(1))
    assert to_tuned < 1e-4 and to_pretrained > 1e-2
    assert "the server serves the fine-tuned model" in output

    # The oracle: transformers with the checkpoint's weights, mean over layer -2 (the server's default).
    sys.path.insert(0, str(EXAMPLES))
    from fine_tuned_model import PROBES

    tokenizer, pretrained = hf_model
    tuned = transformers_with_checkpoint(tmp_path / "model.ckpt-3")
    batch = tokenizer(PROBES, padding=True, return_tensors="pt")
    mask = batch["attention_mask"].unsqueeze(-1).float()
    with torch.no_grad():
        expected, before = (((m(**batch, output_hidden_states=True).hidden_states[-2] * mask).sum(1) / mask.sum(1))
                            .numpy() for m in (tuned, pretrained))
    served = np.load(vectors_out)
    np.testing.assert_allclose(served, expected, atol=2e-4)
    assert np.abs(served - before).max() > 1e-2


def panel_grid(png) -> tuple[int, int]:
    """Rows and columns of plot panels in a PNG: each panel's frame is a pair of dark lines across the image."""
    import matplotlib.image

    image = matplotlib.image.imread(png)[..., :3].mean(axis=-1)
    dark = image < 0.3

    def frames(line_fraction: np.ndarray) -> int:
        lines = np.flatnonzero(line_fraction > 0.6)
        runs = 0 if lines.size == 0 else 1 + int(np.count_nonzero(np.diff(lines) > 1))
        return runs // 2

    return frames(dark.mean(axis=1)), frames(dark.mean(axis=0))


def test_layer_visualization_draws_one_panel_per_layer(tmp_path):
    png = tmp_path / "layers.png"
    output = run_example("layer_visualization.py", "--layers", "-1", "-2", "--output", str(png),
                         "--port", str(free_port()), "--port_out", str(free_port()))
    assert "layer -1: encoded 48 sentences" in output and "layer -2: encoded 48 sentences" in output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert panel_grid(png) == (1, 2)


@pytest.mark.parametrize("name, arguments, start", [
    ("semantic_search.py", ["a question"], "make serve"),
    ("async_encoding.py", [], "make serve"),
    ("broadcast.py", [], "make serve"),
    ("token_embeddings.py", [], "bert-serving-start -pooling_strategy NONE -show_tokens_to_client"),
    ("own_tokenizer.py", [], "make serve"),
    ("tf_data_pipeline.py", [], "make serve"),
    ("dashboard.py", [], "bert-serving-start -http_port 8125"),
    ("http_json.py", [], "bert-serving-start -http_port 8125"),
])
def test_without_a_server_each_example_stops_with_a_one_line_hint(name, arguments, start, tmp_path):
    """Within its --timeout, not never. (text_classifier.py and tfrecord.py connect as semantic_search.py does; left
    out because importing TensorFlow costs them seconds each.)"""
    port, port_out = free_port(), free_port()  # nothing listens there
    ports = ["--http_port", str(port)] if name == "http_json.py" else ["--port", str(port), "--port_out", str(port_out)]
    completed = subprocess.run([sys.executable, str(EXAMPLES / name), *arguments, *ports, "--timeout", "1000"],
                               cwd=tmp_path, text=True, capture_output=True, timeout=120)
    assert completed.returncode == 1, (completed.stdout, completed.stderr)
    assert "Traceback" not in completed.stderr
    hint = completed.stderr.strip().splitlines()[-1]
    assert hint.startswith(f"no bert-serving server answered at ") and f":{port}" in hint, completed.stderr
    assert f"start one first with `{start}` in another terminal" in hint
