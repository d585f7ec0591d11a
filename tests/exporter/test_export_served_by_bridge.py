"""bert-serving-start -model_dir with a Google checkpoint (and a fine-tuned one) exports on the fly and serves it.

The vectors that come back over ZeroMQ equal transformers' BertModel on the same weights with the original pooling.
"""
from __future__ import annotations

import numpy as np
import pytest
from export_oracle import assert_close, original_pooling, reference

pytestmark = pytest.mark.slow

MAX_SEQ_LEN = 12


def tokenized_batch(vocab_file) -> tuple[list[list[str]], dict]:
    vocab = vocab_file.read_text().split()
    sentences = [["tok7", "tok42", "tok9"], ["tok100", "tok5", "tok61", "tok77", "tok8"]]
    ids = np.zeros((len(sentences), MAX_SEQ_LEN), np.int32)
    for row, words in enumerate(sentences):
        tokens = ["[CLS]", *words, "[SEP]"]
        ids[row, :len(tokens)] = [vocab.index(token) for token in tokens]
    return sentences, {"input_ids": ids, "input_mask": (ids > 0).astype(np.int32), "segment_ids": np.zeros_like(ids)}


@pytest.mark.parametrize("source_name", ["google", "tuned"])
def test_checkpoint_folders_are_served_on_the_fly(source_name, sources, start_bridge, legacy_client, tmp_path):
    source = sources[source_name]
    flags = ["-model_dir", str(source.model_dir), "-max_seq_len", str(MAX_SEQ_LEN), "--cache-dir", str(tmp_path)]
    if source.tuned_model_dir:
        flags += ["-tuned_model_dir", str(source.tuned_model_dir), "-ckpt_name", "model.ckpt-1000"]
    sentences, feeds = tokenized_batch(source.model_dir / "vocab.txt")
    with start_bridge(*flags) as bridge:
        with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000) as bc:
            vectors = bc.encode(sentences, is_tokenized=True)
    assert "exporting" in bridge.log()
    expected = original_pooling(reference(source.oracle, feeds), feeds["input_mask"], "REDUCE_MEAN", [-2])
    assert_close(vectors, expected)
