"""What a user would run instead, in this process, on the same sentences.

- ``OnnxRuntimeBaseline``: onnxruntime on the very ONNX file the service runs, with the same thread setting, the same
  tokenizer and the service's length-sorted chunks, each padded exactly to its longest: the model's own ceiling,
  without any serving.
- ``SentenceTransformersBaseline``: ``SentenceTransformer.encode`` (torch), what most users would write.
``encode`` of each takes its turn beside the service (bench/paired.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bert_bridge.service import CHUNK_SENTENCES  # the service's chunks, so the baseline runs the same calls

ST_BATCH_SIZE = 32  # sentence-transformers' own default: what a user gets


class OnnxRuntimeBaseline:
    def __init__(self, model_folder: Path, *, max_seq_len: int | None, threads: int = 0):
        import onnxruntime as ort

        from bert_bridge.tokenization import TokenizerSettings, WordPieceTokenizer
        from bert_exporter.manifest import ExportManifest

        manifest = ExportManifest.load(model_folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # the embedded model.py's default (0: onnxruntime decides)
        self.session = ort.InferenceSession(str(model_folder / "1" / "model.onnx"), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = WordPieceTokenizer(TokenizerSettings(
            vocab_file=model_folder / manifest.vocab_file, do_lower_case=manifest.do_lower_case,
            max_seq_len=max_seq_len, max_position_embeddings=manifest.max_position_embeddings))

    def encode(self, sentences: list[str]) -> np.ndarray:
        from bert_bridge.tokenization import pad

        encodings = self.tokenizer.encode(sentences)
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].input_ids))
        rows = []
        for start in range(0, len(order), CHUNK_SENTENCES):
            chunk = [encodings[i] for i in order[start:start + CHUNK_SENTENCES]]
            ids, mask, segments = pad(chunk, max(len(e.input_ids) for e in chunk))
            rows.append(self.session.run(None, {"input_ids": ids, "input_mask": mask, "segment_ids": segments})[0])
        out = np.empty((len(encodings),) + rows[0].shape[1:], rows[0].dtype)
        out[order] = np.concatenate(rows)
        return out


class SentenceTransformersBaseline:
    def __init__(self, model_dir: Path, *, max_seq_len: int, threads: int):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        self.model.max_seq_length = max_seq_len

    def encode(self, sentences: list[str]) -> np.ndarray:
        return self.model.encode(sentences, batch_size=ST_BATCH_SIZE)
