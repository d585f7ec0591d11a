"""The official ``openai`` package against the bridge (issue 8, Done when 2): its default (base64) and
``encoding_format="float"`` give the ZeroMQ front end's vectors, and ``usage`` counts the tokens transformers'
BertTokenizer makes of the same sentences (truncated to max_seq_len, [CLS] and [SEP] included)."""
from __future__ import annotations

import numpy as np
import pytest

from bert_exporter.options import packaged_model_dir

pytestmark = pytest.mark.slow

MAX_SEQ_LEN = 25  # the bridge's default
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings over HTTP, finally!",
    "ünïcödé and CJK 中文 text",
    " ".join(["a long sentence that the server truncates to max_seq_len tokens"] * 6),
]


@pytest.fixture(scope="module")
def openai_client(http_bridge):
    from openai import OpenAI

    return OpenAI(base_url=f"{http_bridge.url}/v1", api_key="unused-without---api-key", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(str(packaged_model_dir() / "vocab.txt"), do_lower_case=True)


def _tokens_seen(tokenizer, sentences) -> int:
    return sum(len(tokenizer(s, truncation=True, max_length=MAX_SEQ_LEN)["input_ids"]) for s in sentences)


@pytest.mark.parametrize("encoding_format", [None, "float"])
def test_openai_sdk_gets_the_zeromq_vectors_and_real_usage(openai_client, zmq_client, reference_tokenizer,
                                                           encoding_format):
    kwargs = {} if encoding_format is None else {"encoding_format": encoding_format}
    response = openai_client.embeddings.create(input=SENTENCES, model="bert", **kwargs)
    assert [d.index for d in response.data] == list(range(len(SENTENCES)))
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    expected = zmq_client.encode(SENTENCES)
    assert vectors.shape == expected.shape == (len(SENTENCES), 384)
    assert np.abs(vectors - expected).max() <= 1e-6
    tokens = _tokens_seen(reference_tokenizer, SENTENCES)
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    assert response.model == openai_client.models.list().data[0].id


def test_openai_sdk_token_id_input_equals_the_text(openai_client, zmq_client, reference_tokenizer):
    # Token ids are the content of a sequence: the bridge adds [CLS]/[SEP] and truncates as for text.
    ids = [reference_tokenizer(s, add_special_tokens=False)["input_ids"] for s in SENTENCES]
    response = openai_client.embeddings.create(input=ids, model="bert")
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert np.abs(vectors - zmq_client.encode(SENTENCES)).max() <= 1e-6
    assert response.usage.prompt_tokens == _tokens_seen(reference_tokenizer, SENTENCES)
    single = openai_client.embeddings.create(input=ids[1], model="bert", encoding_format="float")
    assert np.abs(np.array(single.data[0].embedding) - vectors[1]).max() <= 1e-6


def test_openai_sdk_accepts_2048_inputs_and_a_plain_string(openai_client, zmq_client):
    many = [f"sentence number {i}" for i in range(2048)]
    response = openai_client.embeddings.create(input=many, model="bert", dimensions=384)
    assert len(response.data) == 2048 and [d.index for d in response.data][-1] == 2047
    np.testing.assert_allclose(response.data[-1].embedding, zmq_client.encode([many[-1]])[0], atol=1e-6, rtol=0)
    one = openai_client.embeddings.create(input="a plain string", model="bert")
    assert len(one.data) == 1


def test_openai_sdk_raises_its_own_errors(openai_client):
    import openai

    with pytest.raises(openai.UnprocessableEntityError, match="dimensions"):
        openai_client.embeddings.create(input=["x"], model="bert", dimensions=12)
    with pytest.raises(openai.UnprocessableEntityError, match="outside the model's vocabulary"):
        openai_client.embeddings.create(input=[[10**6]], model="bert")
