"""The reference graph: the fastest CPU graph known for the model, to hold the exported one against (issue 23).

transformers' ``BertModel`` (eager attention) with the same pooling as the export, exported by ``torch.onnx.export``
and fused by onnxruntime's transformer optimizer (``model_type bert``: EmbedLayerNormalization, Attention,
SkipLayerNormalization, BiasGelu). It computes what the export computes -- the same layers (none past the pooled one),
the same masked mean -- so the two are timed on equal work. Built only where torch and transformers are installed (the
test extras); ``graph_ratios`` times both in this process, taking turns call by call.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SHAPES = ((32, 40), (64, 40), (16, 128))  # rows x tokens of the in-process comparison (Done-when 1 of issue 23)
OPSET = 17


def available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


def build_reference(model_dir: Path, folder: Path, *, pooling_layer: int) -> Path:
    """``folder/reference.onnx`` for the BERT in ``model_dir``, mean-pooled over ``pooling_layer``; reused when there."""
    path = folder / "reference.onnx"
    recipe = {"model_dir": str(model_dir), "pooling_layer": pooling_layer, "opset": OPSET}
    if path.is_file() and (folder / "recipe.json").is_file() and json.loads((folder / "recipe.json").read_text()) == recipe:
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
            hidden = self.bert(input_ids=input_ids, attention_mask=input_mask, token_type_ids=segment_ids).last_hidden_state
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
    (folder / "recipe.json").write_text(json.dumps(recipe))
    return path


def graph_ratios(ours: Path, reference: Path, *, rounds: int, vocab_size: int) -> dict[str, dict]:
    """Our graph's speed over the reference's at each of SHAPES, in this process: both sessions with onnxruntime's
    defaults, the same random full-length batch, taking turns call by call (the order alternating), median times."""
    import onnxruntime as ort

    sessions = {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                for name, path in (("ours", ours), ("reference", reference))}
    rng = np.random.default_rng(0)
    results = {}
    for rows, tokens in SHAPES:
        ids = rng.integers(1000, vocab_size, size=(rows, tokens)).astype(np.int32)
        feeds = {"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": np.zeros_like(ids)}
        vectors = {name: session.run(None, feeds)[0] for name, session in sessions.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for round_index in range(rounds):
            order = list(sessions) if round_index % 2 == 0 else list(reversed(sessions))
            for name in order:
                start = time.perf_counter()
                sessions[name].run(None, feeds)
                times[name].append(time.perf_counter() - start)
        ours_s, reference_s = float(np.median(times["ours"])), float(np.median(times["reference"]))
        results[f"{rows}x{tokens}"] = {
            "ratio": reference_s / ours_s, "ours_ms": 1000 * ours_s, "reference_ms": 1000 * reference_s,
            "max_abs_difference": float(np.abs(vectors["ours"] - vectors["reference"]).max())}
    return results
