"""LangChain's ``OpenAIEmbeddings`` against /v1/embeddings, as docs/HTTP.md sets it up (check_embedding_ctx_length=False:
text goes out, never tiktoken's token ids), on a machine without internet; and the answer a client gets when it sends
another tokenizer's ids."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from http_calls import call

pytestmark = pytest.mark.slow

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "LangChain sends the text itself",
    "ünïcödé and CJK 中文 text",
    " ".join(["a long sentence that the server truncates to max_seq_len tokens"] * 6),
]
NO_SERVER = "http://127.0.0.1:9"  # the discard port: nothing listens, so a connection is refused at once
# Run in a process of its own, whose environment has no way to the internet.
LANGCHAIN = """
import json, sys
from langchain_openai import OpenAIEmbeddings

url, texts = sys.argv[1], json.loads(sys.argv[2])
embeddings = OpenAIEmbeddings(base_url=url, api_key="unused-without---api-key", model="bert",
                              check_embedding_ctx_length=False, max_retries=0, timeout=120)
print(json.dumps({"documents": embeddings.embed_documents(texts), "query": embeddings.embed_query(texts[1])}))
"""


def offline_environment(tiktoken_cache: Path) -> dict:
    """Everything but this machine is unreachable: every proxy variable points at a closed port (only the service's
    own address is exempt), and tiktoken's cache is an empty folder. A download of tiktoken's cl100k_base -- what
    OpenAIEmbeddings does first with its defaults -- fails at once instead of being fetched."""
    environment = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tiktoken_cache), "NO_PROXY": "127.0.0.1,localhost",
                   "no_proxy": "127.0.0.1,localhost"}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        environment[name] = environment[name.lower()] = NO_SERVER
    return environment


def service_vectors(http_bridge, texts: list[str]) -> np.ndarray:
    reply = call(f"{http_bridge.url}/v1/embeddings", "POST",
                 json_body={"input": texts, "model": "bert", "encoding_format": "float"})
    assert reply.status == 200, reply.body
    return np.array([item["embedding"] for item in reply.json()["data"]], dtype=np.float32)


def test_langchain_embeds_what_the_service_encodes(http_bridge, tmp_path):
    tiktoken_cache = tmp_path / "tiktoken"
    result = subprocess.run([sys.executable, "-c", LANGCHAIN, f"{http_bridge.url}/v1", json.dumps(SENTENCES)],
                            env=offline_environment(tiktoken_cache), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    received = json.loads(result.stdout)
    documents = np.array(received["documents"], dtype=np.float32)
    query = np.array(received["query"], dtype=np.float32)

    expected = service_vectors(http_bridge, SENTENCES)
    assert documents.shape == expected.shape == (len(SENTENCES), 384)
    assert np.abs(documents - expected).max() <= 1e-6
    assert np.abs(query - expected[1]).max() <= 1e-6
    assert not tiktoken_cache.exists() or not any(tiktoken_cache.iterdir()), "tiktoken was asked for its encoding"


def test_ids_of_another_tokenizer_get_an_answer_that_names_the_cause_and_the_setting(http_bridge):
    """What LangChain's defaults send: tiktoken ids, most of them past this model's 30,522-word vocabulary."""
    reply = call(f"{http_bridge.url}/v1/embeddings", "POST",
                 json_body={"input": [[9906, 1917, 100256]], "model": "bert"})
    assert reply.status == 422
    error = reply.json()["error"]
    assert error["param"] == "input" and error["code"] == "invalid_value"
    message = error["message"]
    assert "input 0, token 2: id 100256 is outside the model's vocabulary (0 to 30521)" in message
    assert "tiktoken" in message and "check_embedding_ctx_length=False" in message and "docs/HTTP.md" in message
