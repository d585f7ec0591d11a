"""The reference graph: the fastest CPU graph known for the model, to hold the exported one against (issue 23).

transformers' ``BertModel`` (eager attention) with the same pooling as the export, exported by ``torch.onnx.export``
and fused by onnxruntime's transformer optimizer (``model_type bert``: EmbedLayerNormalization, Attention,
SkipLayerNormalization, BiasGelu). It computes what the export computes -- the same layers (none past the pooled one),
the same masked mean -- so the two are timed on equal work. Built only where torch and transformers are installed (the
test extras); ``graph_ratios`` times both in one process, taking turns call by call.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SHAPES = ((32, 40), (64, 40), (16, 128))  # rows x tokens of the in-process comparison (Done-when 1 of issue 23)
OPSET = 17
WARM_UP_CALLS = 3


def available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


def build_reference(model_dir: Path, folder: Path, *, pooling_layer: int) -> Path:
    """``folder/reference.onnx`` for the BERT in ``model_dir``, mean-pooled over ``pooling_layer`` (reused)."""
    path = folder / "reference.onnx"
    recipe = {"model_dir": str(model_dir), "pooling_layer": pooling_layer, "opset": OPSET}
    recipe_file = folder / "recipe.json"
    if path.is_file() and recipe_file.is_file() and json.loads(recipe_file.read_text()) == recipe:
        return path
    import torch
    import transformers
    from onnxruntime.transformers import optimizer

    folder.mkdir(parents=True, exist_ok=True)
    model = transformers.BertModel.from_pretrained(str(model_dir), attn_implementation="eager",
                                                   add_pooling_layer=False).eval()
    count = model.config.num_hidden_layers
    model.encoder.layer = model.encoder.layer[:pooling_layer % count + 1]  # nothing past the pooled layer

    class MeanPooled(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, input_mask, segment_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=input_mask,
                               token_type_ids=segment_ids).last_hidden_state
            mask = input_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / (mask.sum(1) + 1e-10)

    names = ["input_ids", "input_mask", "segment_ids"]
    example = torch.ones(2, 8, dtype=torch.int32)
    raw = folder / "traced.onnx"
    torch.onnx.export(MeanPooled(model), (example, example, example * 0), str(raw), input_names=names,
                      output_names=["encodes"], opset_version=OPSET, dynamo=False,
                      dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in names}, "encodes": {0: "batch"}})
    fused = optimizer.optimize_model(str(raw), model_type="bert", num_heads=model.config.num_attention_heads,
                                     hidden_size=model.config.hidden_size)
    log.info("reference graph: %s", {k: v for k, v in fused.get_fused_operator_statistics().items() if v})
    fused.save_model_to_file(str(path))
    raw.unlink()
    recipe_file.write_text(json.dumps(recipe))
    return path


def graph_ratios(ours: Path, reference: Path, *, rounds: int, vocab_size: int) -> dict[str, dict]:
    """Our graph's speed over the reference's at each of SHAPES (``in_process_times``)."""
    times = in_process_times({"ours": ours, "reference": reference}, rounds=rounds, vocab_size=vocab_size)
    return {shape: {"ratio": t["reference"]["ms"] / t["ours"]["ms"], "ours_ms": t["ours"]["ms"],
                    "reference_ms": t["reference"]["ms"], "max_abs_difference": t["reference"]["max_abs_difference"]}
            for shape, t in times.items()}


def in_process_times(models: dict[str, Path], *, rounds: int, vocab_size: int,
                     shapes: tuple = SHAPES) -> dict[str, dict[str, dict]]:
    """Median milliseconds per call of each ONNX model at each shape (rows x tokens of random ids, every token real),
    and each one's largest difference to the first model's vectors.

    The sessions run in a fresh process and share one onnxruntime thread pool: two sessions with pools of their own
    slow each other down (one's idle threads spin while the other runs), by how much depending on the order they were
    created -- the same pair measured 0.96x one way round and 1.13x the other. With one pool the order does not
    matter. Otherwise onnxruntime's defaults; the calls take turns, the order alternating, after a warm-up.
    """
    request = {"models": {name: str(path) for name, path in models.items()}, "rounds": rounds,
               "vocab_size": vocab_size, "shapes": [list(shape) for shape in shapes]}
    done = subprocess.run([sys.executable, "-m", __name__, json.dumps(request)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"timing {list(models)} in process failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def _time_models(request: dict) -> dict:
    import onnxruntime as ort
    from onnxruntime.capi import _pybind_state

    _pybind_state.set_global_thread_pool_sizes(0, 0)  # before the first session: onnxruntime's default sizes
    options = ort.SessionOptions()
    options.use_per_session_threads = False
    sessions = {name: ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                for name, path in request["models"].items()}
    names = list(sessions)
    rng = np.random.default_rng(0)
    results = {}
    for rows, tokens in request["shapes"]:
        ids = rng.integers(5, request["vocab_size"], size=(rows, tokens)).astype(np.int32)
        feeds = {"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": np.zeros_like(ids)}
        for _ in range(WARM_UP_CALLS):
            vectors = {name: session.run(None, feeds)[0] for name, session in sessions.items()}
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(request["rounds"]):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                sessions[name].run(None, feeds)
                times[name].append(time.perf_counter() - start)
        first = vectors[names[0]].astype(np.float32)
        results[f"{rows}x{tokens}"] = {name: {
            "ms": 1000 * float(np.median(times[name])),
            "max_abs_difference": float(np.abs(vectors[name].astype(np.float32) - first).max())
            if vectors[name].shape == first.shape else None} for name in names}
    return results


if __name__ == "__main__":
    print(json.dumps(_time_models(json.loads(sys.argv[1]))))
