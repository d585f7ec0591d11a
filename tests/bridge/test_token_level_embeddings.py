"""Pooling NONE with max_seq_len NONE: [B, T, D] per request, T as the original chose it, padding rows zero."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SHORT, LONG = "hello world", "a somewhat longer sentence about token level embeddings and their shapes"


def transformers_hidden_states(hf_model, sentence: str, layer: int) -> np.ndarray:
    import torch

    tokenizer, model = hf_model
    batch = tokenizer([sentence], return_tensors="pt")
    with torch.no_grad():
        return model(**batch, output_hidden_states=True).hidden_states[layer][0].numpy()


def test_dynamic_length_token_embeddings(start_bridge, legacy_client, hf_model):
    with start_bridge("-pooling_strategy", "NONE", "-max_seq_len", "NONE", "-show_tokens_to_client") as bridge:
        with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000) as bc:
            assert bc.server_config["max_seq_len"] is None
            short_only, short_tokens = bc.encode([SHORT], show_tokens=True)
            both, tokens = bc.encode([SHORT, LONG], show_tokens=True)
    assert short_only.shape == (1, len(short_tokens[0]), 384)  # T follows the longest sentence of the request
    assert both.shape == (2, len(tokens[1]), 384)
    for row, sentence, sentence_tokens in ((both[0], SHORT, tokens[0]), (both[1], LONG, tokens[1])):
        real = len(sentence_tokens)
        expected = transformers_hidden_states(hf_model, sentence, layer=-2)
        assert expected.shape[0] == real
        assert np.abs(row[:real] - expected).max() <= 1e-4
        assert not row[real:].any(), "padding rows must be zero"
    assert np.abs(short_only[0] - both[0][: short_only.shape[1]]).max() <= 1e-4


def test_fixed_embed_length_pads_to_max_position_embeddings(start_bridge, legacy_client):
    with start_bridge("-pooling_strategy", "NONE", "-max_seq_len", "NONE", "-fixed_embed_length") as bridge:
        with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000) as bc:
            short, long = bc.encode([SHORT]), bc.encode([SHORT, LONG])
    assert short.shape == (1, 512, 384) and long.shape == (2, 512, 384)
    assert short[0, :4].any() and not short[0, 4:].any()  # [CLS] hello world [SEP], then zero padding
