"""What a user would run instead, in this process, on the same sentences.

- ``OnnxRuntimeBaseline``: onnxruntime on the very ONNX file the service runs, with the same thread setting, the same
  tokenizer and the service's chunks of length-sorted sentences, padded as the service pads them: the model's own
  ceiling, without any serving. Given another ONNX file (the reference graph, reference_graph.py), the same calls
  through that graph.
- ``SentenceTransformersBaseline``: ``SentenceTransformer.encode`` (torch), what most users would write.
``encode`` of each takes its turn beside the service (bench/paired.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bert_bridge.core.chunking import plan_chunks  # the service's chunks, so the baseline runs the same calls

ST_BATCH_SIZE = 32  # sentence-transformers' own default: what a user gets


class OnnxRuntimeBaseline:
    def __init__(self, model_folder: Path, *, max_seq_len: int | None, threads: int = 0,
                 onnx_file: Path | None = None):
        import onnxruntime as ort

        from bert_bridge.core.tokenization import TokenizerSettings, WordPieceTokenizer
        from bert_exporter.manifest import ExportManifest

        manifest = ExportManifest.load(model_folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # the embedded model.py's default (0: onnxruntime decides)
        self.session = ort.InferenceSession(str(onnx_file or model_folder / "1" / "model.onnx"), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = WordPieceTokenizer(TokenizerSettings(
            vocab_file=model_folder / manifest.vocab_file, do_lower_case=manifest.do_lower_case,
            max_seq_len=max_seq_len, max_position_embeddings=manifest.max_position_embeddings))

    def encode(self, sentences: list[str]) -> np.ndarray:
        from bert_bridge.core.tokenization import pad

        encodings = self.tokenizer.encode(sentences)
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].input_ids))
        lengths = [len(encodings[i].input_ids) for i in order]
        rows = []
        for chunk in plan_chunks(lengths, cap=max(lengths), max_rows=len(lengths)):
            ids, mask, segments = pad([encodings[i] for i in order[chunk.start:chunk.stop]], chunk.length)
            rows.append(self.session.run(None, {"input_ids": ids, "input_mask": mask, "segment_ids": segments})[0])
        out = np.empty((len(encodings),) + rows[0].shape[1:], rows[0].dtype)
        out[order] = np.concatenate(rows)
        return out


def time_per_position(model_folder: Path, lengths: tuple[int, ...], *, positions: int = 1024,
                      rounds: int = 15) -> dict[int, float]:
    """onnxruntime's time per token position (microseconds) in calls of ``positions`` positions at each length, taking
    turns: where it is flat in the length, no way of padding can gain more than the positions it saves
    (docs/PERFORMANCE.md, Done-when 3). The least of ``rounds`` calls: the compute is the same every call, and the
    machine's bursts of interference (bench/paired.py) only add time."""
    import time

    import onnxruntime as ort

    session = ort.InferenceSession(str(model_folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for length in lengths:
        ids = rng.integers(1000, 20000, size=(max(1, positions // length), length)).astype(np.int32)
        feeds[length] = {"input_ids": ids, "input_mask": np.ones_like(ids), "segment_ids": np.zeros_like(ids)}
        session.run(None, feeds[length])  # warm-up: its memory plan for this shape
    times: dict[int, list[float]] = {length: [] for length in lengths}
    for _ in range(rounds):
        for length, feed in feeds.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[length].append((time.perf_counter() - start) / feed["input_ids"].size * 1e6)
    return {length: float(np.min(values)) for length, values in times.items()}


class SentenceTransformersBaseline:
    def __init__(self, model_dir: Path, *, max_seq_len: int, threads: int):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        self.model.max_seq_length = max_seq_len

    def encode(self, sentences: list[str]) -> np.ndarray:
        return self.model.encode(sentences, batch_size=ST_BATCH_SIZE)
