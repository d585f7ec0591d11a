"""ModernBERT, NomicBert and GTE served end to end (issue 25): through the unmodified 1.10 client and /v1/embeddings
each equals transformers' hidden states pooled as the export's options say (within 1e-4), on inputs of 10 to 3,000
tokens and a sentence pair; each sentence-transformers folder served with AUTO equals SentenceTransformer.encode
(within 1e-5); one request of many long documents is answered row for row.

One tritonserver serves all six exports (tests/rotary/conftest.py); the tiny ModernBERT's local layers see 32 tokens
on either side, so every input past 33 tokens goes through its sliding window.
"""
from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
from export_oracle import Reference, original_pooling
from rotary_models import POOLING, text_of_tokens

pytestmark = pytest.mark.slow

LENGTHS = (10, 60, 700, 3000)


class Oracle:
    """transformers' model and tokenizer of one family, run on one input at a time (no padding)."""

    def __init__(self, folder):
        import transformers

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        self.model = transformers.AutoModel.from_pretrained(folder).eval()
        self.texts = [text_of_tokens(self.tokenizer, n) for n in LENGTHS]

    def pooled(self, text: str, strategy: str, layers: tuple[int, ...], *, pair: bool = True) -> np.ndarray:
        """``text`` split at ' ||| ' into a pair as ZeroMQ splits it, or taken whole (``pair=False``: an OpenAI
        input is one text)."""
        import torch

        parts = text.split(" ||| ") if pair else [text]
        encoded = self.tokenizer(*parts, return_tensors="pt")
        inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if self.model.config.model_type != "modernbert":  # the others take token types (all zeros but NomicBert's)
            inputs["token_type_ids"] = encoded.get("token_type_ids", torch.zeros_like(encoded["input_ids"]))
        with torch.no_grad():
            hidden = self.model(**inputs, output_hidden_states=True).hidden_states
        reference = Reference(layers=[h.numpy() for h in hidden[1:]], pooled=None)
        return original_pooling(reference, encoded["attention_mask"].numpy(), strategy, list(layers))[0]


@pytest.fixture(scope="session")
def oracles(rotary_folders):
    cache = {}

    def oracle(family: str) -> Oracle:
        if family not in cache:
            cache[family] = Oracle(rotary_folders.model(family))
        return cache[family]

    return oracle


def openai_embeddings(http_port: int, texts: list[str]) -> np.ndarray:
    request = urllib.request.Request(f"http://localhost:{http_port}/v1/embeddings",
                                     data=json.dumps({"input": texts, "model": "served"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as reply:
        return np.array([row["embedding"] for row in json.load(reply)["data"]], dtype=np.float32)


def legacy_encode(legacy_client, served, texts: list[str]) -> np.ndarray:
    client = legacy_client.BertClient(port=served.bridge.port, port_out=served.bridge.port_out, timeout=300_000)
    try:
        return client.encode(texts)
    finally:
        client.close()


def test_each_family_served_equals_transformers_on_10_to_3000_tokens(rotary_serving, rotary_family, oracles,
                                                                     legacy_client):
    oracle = oracles(rotary_family)
    served = rotary_serving.served(rotary_family, auto=False)
    inputs = oracle.texts + ["Der Zug nach Berlin ||| hat heute leider Verspätung."]
    token_counts = [len(oracle.tokenizer(*text.split(" ||| "))["input_ids"]) for text in inputs]
    assert min(token_counts) <= 10 and max(token_counts) >= 2_900  # the range the issue asks for
    strategy, layers = POOLING[rotary_family]
    expected = np.stack([oracle.pooled(text, strategy, layers) for text in inputs])
    zeromq = legacy_encode(legacy_client, served, inputs)
    openai = openai_embeddings(served.http_port, inputs)
    one_text_each = np.stack([oracle.pooled(text, strategy, layers, pair=False) for text in inputs])
    assert zeromq.shape == expected.shape == openai.shape
    np.testing.assert_allclose(zeromq, expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(openai, one_text_each, rtol=0, atol=1e-4)


def test_each_sentence_transformers_folder_served_with_auto_equals_encode(rotary_serving, rotary_family,
                                                                          rotary_folders, oracles):
    from sentence_transformers import SentenceTransformer

    served = rotary_serving.served(rotary_family, auto=True)
    texts = oracles(rotary_family).texts
    expected = SentenceTransformer(str(rotary_folders.sentence_transformers(rotary_family)), device="cpu").encode(
        texts, batch_size=2)
    np.testing.assert_allclose(openai_embeddings(served.http_port, texts), expected, rtol=0, atol=1e-5)


def test_one_request_of_long_documents_is_answered_row_for_row(rotary_serving, oracles, legacy_client):
    """The short version of the benchmark's 64 documents of 8,000 tokens (bench/long_context.py): twelve documents
    of up to 3,000 tokens in one request, each its own chunk, every row transformers' own."""
    oracle = oracles("modernbert")
    documents = [text_of_tokens(oracle.tokenizer, n) for n in (2_200, 2_600, 3_000)] * 4
    strategy, layers = POOLING["modernbert"]
    expected = {text: oracle.pooled(text, strategy, layers) for text in set(documents)}
    vectors = legacy_encode(legacy_client, rotary_serving.served("modernbert", auto=False), documents)
    np.testing.assert_allclose(vectors, np.stack([expected[text] for text in documents]), rtol=0, atol=1e-4)
