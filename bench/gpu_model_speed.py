"""BERT-base's own speed on a CUDA GPU in fp16, outside any server: what the model alone does on that GPU.

The GPU row of docs/PERFORMANCE.md is the service through TensorRT fp16; this script measures the ceiling any server on
that GPU sits under, with nothing but PyTorch and transformers (both on every CUDA image), so a GPU host without
TensorRT still gives a number next to the original's Tesla M40 table. It reports what the host has for the
TensorRT row (the ``tensorrt`` package, ``trtexec``, onnxruntime's providers).

The model: the BERT-base shape (12 layers, 768 wide) with random weights, as ``bert-serving-benchmark -model
bert-base``; the service's default pooling (REDUCE_MEAN over layer -2, masked). Every sentence is padded to
max_seq_len, as the original did, and batches are at most 256 (the original's max_batch_size). Times are CUDA-event
medians over repeated batches after warm-up; inputs are built on the GPU beforehand, so copies are not counted.

    python bench/gpu_model_speed.py -output DIR
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import statistics
from pathlib import Path

# The original's tables (Tesla M40 24GB, 1 GPU, BERT-base, sentences/s through bert-as-service).
M40_BY_MAX_SEQ_LEN = {20: 903, 40: 473, 80: 231, 160: 119, 320: 54}
M40_BY_CLIENT_BATCH = {1: 75, 16: 332, 64: 365, 256: 382}


def host_facts() -> dict:
    import torch

    facts = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
             "python": platform.python_version(),
             "tensorrt_package": importlib.util.find_spec("tensorrt") is not None,
             "trtexec": shutil.which("trtexec")}
    try:
        import onnxruntime

        facts["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        facts["onnxruntime_providers"] = None
    try:
        import transformers

        facts["transformers"] = transformers.__version__
    except ImportError:
        pass
    return facts


def build_model():
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(), add_pooling_layer=False)
    return model.half().cuda().eval()


def sentences_per_second(model, *, rows: int, length: int, repeats: int, vocab_size: int = 30522) -> float:
    import torch

    generator = torch.Generator(device="cuda").manual_seed(length * 1000 + rows)
    input_ids = torch.randint(1000, vocab_size, (rows, length), device="cuda", generator=generator)
    mask = torch.ones_like(input_ids)

    def encode():
        hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1)

    times = []
    with torch.inference_mode():
        for _ in range(3):
            encode()
        torch.cuda.synchronize()
        for _ in range(repeats):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            encode()
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop) / 1000)
    return rows / statistics.median(times)


def markdown(rows: list[dict], key: str, m40: dict) -> str:
    lines = [f"| {key} | H200 model alone, fp16 (sentences/s) | M40 service, original (sentences/s) |",
             "|---:|---:|---:|"]
    for row in rows:
        original = m40.get(row[key])
        lines.append(f"| {row[key]} | {row['sentences_per_s']:.0f} | {original if original else '–'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-output", type=Path, required=True)
    parser.add_argument("-repeats", type=int, default=20)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)

    facts = host_facts()
    print(json.dumps(facts), flush=True)
    model = build_model()
    by_length = []
    for length in M40_BY_MAX_SEQ_LEN:
        speed = sentences_per_second(model, rows=256, length=length, repeats=args.repeats)
        by_length.append({"max_seq_len": length, "sentences_per_s": speed})
        print(f"max_seq_len {length}: {speed:.0f} sentences/s", flush=True)
    by_batch = []
    for batch in M40_BY_CLIENT_BATCH:
        speed = sentences_per_second(model, rows=batch, length=40, repeats=args.repeats)
        by_batch.append({"client_batch_size": batch, "sentences_per_s": speed})
        print(f"client_batch_size {batch}: {speed:.0f} sentences/s", flush=True)
    (args.output / "gpu_model_speed.json").write_text(json.dumps(
        {"facts": facts, "by_max_seq_len": by_length, "by_client_batch_size": by_batch}, indent=2))
    (args.output / "gpu_model_speed.md").write_text(
        f"{facts['gpu']}, torch {facts['torch']} (CUDA {facts['cuda']}), BERT-base fp16, REDUCE_MEAN of layer -2\n\n"
        + markdown(by_length, "max_seq_len", M40_BY_MAX_SEQ_LEN) + "\n\n"
        + markdown(by_batch, "client_batch_size", M40_BY_CLIENT_BATCH) + "\n")


if __name__ == "__main__":
    main()
