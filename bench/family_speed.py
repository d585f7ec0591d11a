"""``bert-serving-benchmark -model xlmr-base``: a 12-layer, 768-wide XLM-RoBERTa beside BERT-base at the same shapes.

Both are written here with random weights (the speed of a graph does not depend on its values) and exported with the
same flags; no tokenizer is needed for speed, so onnxruntime runs both on random ids in this process, taking turns
call by call (bench/reference_graph.py). XLM-R keeps its real vocabulary (250,002 tokens: a larger embedding table,
the same work per token) and its 514 positions. The export needs a tokenizer.json beside the weights; a minimal one
with XLM-R's special tokens is written, never used for text.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .reference_graph import SHAPES, in_process_times

XLMR_VOCAB = 250_002


def write_xlmr_base(folder: Path, **shape) -> Path:
    """XLMRobertaConfig's defaults (base: 12 layers, 768 wide, 3,072 inner, 514 positions; ``shape`` overrides them,
    for the smoke test) with random weights, and a SentencePiece (Unigram) tokenizer of a few pieces: the exporter
    takes the family's own tokenizer kind, and the speed is timed on random ids, so its vocabulary does not matter."""
    if (folder / "tokenizer_config.json").is_file():
        return folder
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**{"vocab_size": XLMR_VOCAB, **shape})).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    pieces = [(token, 0.0) for token in ("<s>", "<pad>", "</s>", "<unk>")]
    pieces += [(f"\u2581{word}", -float(rank)) for rank, word in enumerate("the of and to a in is".split(), 1)]
    transformers.XLMRobertaTokenizer(vocab=[*pieces, ("<mask>", 0.0)], bos_token="<s>", eos_token="</s>",
                                     cls_token="<s>", sep_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                     mask_token="<mask>").save_pretrained(folder)
    return folder


def export(source: Path, models: Path, name: str) -> Path:
    """fp32, the benchmark's common pooling, embedded target (its model.onnx is what the service runs)."""
    folder = models / name
    if not (folder / "bert_export.json").is_file():
        command = [sys.executable, "-m", "bert_exporter.cli", "-model_dir", str(source), "-output", str(models),
                   "-name", name, "-max_seq_len", "128"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bert-serving-benchmark: exporting {source} failed: {done.stderr.strip()}")
    return folder / "1" / "model.onnx"


def run(work: Path, output: Path, *, rounds: int, bert_base: Path) -> str:
    """Times both models; writes family_speed.json and returns the summary's lines."""
    models = work / "models"
    onnx = {"xlmr-base": export(write_xlmr_base(work / "xlmr-base-random"), models, "xlmr-base"),
            "bert-base": export(bert_base, models, "bert-base")}
    times = in_process_times(onnx, rounds=rounds, vocab_size=30_000)
    rows = {shape: {name: {"ms": t["ms"], "sentences_per_s": int(shape.split("x")[0]) / t["ms"] * 1000}
                    for name, t in by_name.items()} for shape, by_name in times.items()}
    output.mkdir(parents=True, exist_ok=True)
    (output / "family_speed.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["## XLM-R base beside BERT-base (random weights, fp32, in process, taking turns)", "",
             "| rows x tokens | XLM-R base sentences/s | BERT-base sentences/s | XLM-R / BERT |",
             "|---|---:|---:|---:|"]
    for shape in (f"{r}x{t}" for r, t in SHAPES):
        x, b = rows[shape]["xlmr-base"], rows[shape]["bert-base"]
        lines.append(f"| {shape} | {x['sentences_per_s']:.1f} | {b['sentences_per_s']:.1f} | "
                     f"{x['sentences_per_s'] / b['sentences_per_s']:.2f}x |")
    return "\n".join(lines)
