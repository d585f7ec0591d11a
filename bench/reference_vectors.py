"""The soak's oracle: the vector each sentence must get, from someone else's implementation.

Hugging Face ``transformers`` ``BertModel(output_hidden_states=True)`` on the served model's Hugging Face folder, with
the server's pooling as its ``server_config`` states it (strategy, layers, max_seq_len, casing, mask_cls_sep), the way
the test suite's oracles pool (tests/bridge/test_legacy_client_end_to_end.py). Computed once per distinct sentence.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# bert_exporter.manifest.PoolingStrategy's values, as server_config sends them
REDUCE_MAX, REDUCE_MEAN, REDUCE_MEAN_MAX, FIRST_TOKEN, LAST_TOKEN, CLS_POOLED = 1, 2, 3, 4, 5, 6
CHECKED_STRATEGIES = {REDUCE_MAX, REDUCE_MEAN, REDUCE_MEAN_MAX, FIRST_TOKEN, LAST_TOKEN, CLS_POOLED}
BATCH = 64


class ReferenceModel:
    """The model loaded once (torch and transformers take seconds to import: done while the server starts)."""

    def __init__(self, model_dir: Path, *, threads: int = 2):
        import torch
        from transformers import BertModel
        from transformers.utils import logging

        logging.disable_progress_bar()  # one line of progress is the soak's own
        torch.set_num_threads(threads)
        self.model_dir = Path(model_dir)
        self.model = BertModel.from_pretrained(str(model_dir)).eval()

    def vectors(self, server_config: dict, sentences: list[str]) -> np.ndarray:
        """One row per sentence, float32, in the order given, pooled as ``server_config`` says."""
        import torch
        from transformers import BertTokenizer

        strategy = int(server_config["pooling_strategy"])
        if strategy not in CHECKED_STRATEGIES or server_config.get("sentence_transformers"):
            raise SystemExit(f"bert-serving-soak checks the original's pooled vectors; pooling_strategy {strategy} "
                             "(NONE: one vector per token) or AUTO (a sentence-transformers pipeline) it cannot check")
        tokenizer = BertTokenizer(str(self.model_dir / "vocab.txt"), do_lower_case=server_config["do_lower_case"])
        max_len = server_config["max_seq_len"] or self.model.config.max_position_embeddings
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))  # similar lengths pad little
        rows = []
        for start in range(0, len(order), BATCH):
            batch = tokenizer([sentences[i] for i in order[start:start + BATCH]], max_length=max_len,
                              truncation=True, padding=True, return_tensors="pt")
            with torch.no_grad():
                out = self.model(**batch, output_hidden_states=True)
            if strategy == CLS_POOLED:
                rows.append(out.pooler_output.numpy())
                continue
            mask = batch["attention_mask"].numpy().astype(np.float32)
            layers = [out.hidden_states[layer].numpy() for layer in server_config["pooling_layer"]]
            rows.append(np.concatenate([_pool(h, mask, strategy, server_config["mask_cls_sep"]) for h in layers],
                                       axis=1))
        vectors = np.empty((len(sentences), rows[0].shape[1]), np.float32)
        vectors[order] = np.concatenate(rows)
        if server_config.get("normalize"):
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors


def _pool(hidden: np.ndarray, mask: np.ndarray, strategy: int, mask_cls_sep: bool) -> np.ndarray:
    last = mask.sum(axis=1).astype(int) - 1  # [SEP]: the last real token
    rows = np.arange(len(hidden))
    if strategy == FIRST_TOKEN:
        return hidden[:, 0]
    if strategy == LAST_TOKEN:
        return hidden[rows, last]
    if mask_cls_sep:
        mask = mask.copy()
        mask[:, 0] = 0
        mask[rows, last] = 0
    weights = mask[:, :, None]
    mean = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
    maximum = (hidden + (1 - weights) * -1e10).max(axis=1)
    return {REDUCE_MEAN: mean, REDUCE_MAX: maximum, REDUCE_MEAN_MAX: np.concatenate([mean, maximum], axis=1)}[strategy]
