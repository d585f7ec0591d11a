"""Every family beyond BERT served by bert-serving-start (issue 22, Done when 1, 2 and 4).

Each family's tiny model (tests/family_models.py) is exported once per pooling configuration into one repository, which
one ``bert-serving-triton`` serves; each bridge starts on one export with ``--triton-url`` (seconds, not the tens of
seconds of an embedded tritonserver). XLM-R's default configuration goes the way a new user goes instead:
``bert-serving-start -model_dir <the XLM-R folder>``, exported on the fly and served by its own embedded Triton.

Oracles: transformers' ``AutoModel(output_hidden_states=True)`` of the family, fed what the family's transformers
tokenizer makes of each sentence under the original's rules (right truncation to max_seq_len with the special tokens
counted; pairs truncated from the longer side), pooled with the original's formulas (tests/export_oracle.py);
``SentenceTransformer(folder).encode`` for the sentence-transformers folders.
"""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from export_oracle import Reference, original_pooling
from family_models import CORPUS, FAMILIES, HELD_OUT

from bert_exporter.manifest import PoolingStrategy

pytestmark = pytest.mark.slow

MAX_SEQ_LEN = 16
XLMR_DEFAULT_MAX_SEQ_LEN = 25  # bert-serving-start's default, for the on-the-fly export
LONG = " ".join(CORPUS[6:12])  # far past max_seq_len in every family
SENTENCES = [*HELD_OUT[:11], "Der Zug nach Berlin ||| 東京は日本の首都です。",
             f"{LONG} ||| a short second part", f"short first ||| {LONG}", LONG]
# pooling configuration -> (strategy, layers)
CONFIGURATIONS = {"REDUCE_MEAN": ("REDUCE_MEAN", (-2,)), "REDUCE_MEAN_MAX": ("REDUCE_MEAN_MAX", (-1, -2)),
                  "FIRST_TOKEN": ("FIRST_TOKEN", (-2,)), "NONE": ("NONE", (-2,))}
ST_SENTENCES = [*HELD_OUT, CORPUS[0], LONG]  # past sentence-transformers' max_seq_length (40) too
# What the original's rules change and the modern routes keep: a ' ||| ', and spaces (tokens in byte-level BPE).
AS_IS = ["The quick brown fox ||| jumps over the lazy dog.", "  Wir treffen uns morgen", "Les enfants jouent  "]


def encode(bridge, legacy_client, sentences, *, show_tokens: bool = True):
    with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=120000,
                                  check_length=False) as bc:
        if show_tokens:
            vectors, tokens = bc.encode(sentences, show_tokens=True)
            return vectors, tokens, bc.server_config
        return bc.encode(sentences), None, bc.server_config


def truncate_pair(a: list, b: list, budget: int) -> tuple[list, list]:
    """The original's _truncate_seq_pair, written here on its own: pop from the longer, from b on a tie."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


def reference_ids(tokenizer, family: str, text: str, max_seq_len: int) -> list[int]:
    """What the family's transformers tokenizer makes of a sentence (or 'a ||| b' pair) under the original's rules."""
    if " ||| " not in text:
        return tokenizer(text, truncation=True, max_length=max_seq_len)["input_ids"]
    first, second = text.rsplit(" ||| ", 1)
    separators = FAMILIES[family].pair_separators
    a, b = truncate_pair(tokenizer(first, add_special_tokens=False)["input_ids"],
                         tokenizer(second, add_special_tokens=False)["input_ids"], max_seq_len - 2 - separators)
    return [tokenizer.cls_token_id, *a, *[tokenizer.sep_token_id] * separators, *b, tokenizer.sep_token_id]


class Oracle:
    """transformers' hidden states of one family's model for SENTENCES, padded to max_seq_len."""

    def __init__(self, folder, family: str, max_seq_len: int):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        ids = [reference_ids(self.tokenizer, family, text, max_seq_len) for text in SENTENCES]
        self.tokens = [self.tokenizer.convert_ids_to_tokens(row) for row in ids]
        self.mask = np.array([[1] * len(row) + [0] * (max_seq_len - len(row)) for row in ids], np.int64)
        padded = np.array([row + [self.tokenizer.pad_token_id] * (max_seq_len - len(row)) for row in ids], np.int64)
        model = AutoModel.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            out = model(input_ids=torch.from_numpy(padded), attention_mask=torch.from_numpy(self.mask),
                        output_hidden_states=True)
        self.layers = [h.numpy() for h in out.hidden_states[1:]]

    def pooled(self, strategy: str, layers) -> np.ndarray:
        return original_pooling(Reference(layers=self.layers, pooled=None), self.mask, strategy, list(layers))


@pytest.fixture(scope="module")
def oracles(family_folders):
    cache = {}

    def oracle(family: str, max_seq_len: int = MAX_SEQ_LEN) -> Oracle:
        if (family, max_seq_len) not in cache:
            cache[family, max_seq_len] = Oracle(family_folders.model(family), family, max_seq_len)
        return cache[family, max_seq_len]

    return oracle


def check_served(vectors, tokens, oracle: Oracle, strategy: str, layers) -> None:
    expected = oracle.pooled(strategy, layers)
    assert vectors.shape == expected.shape, (vectors.shape, expected.shape)
    difference = float(np.abs(vectors - expected).max())
    assert difference <= 1e-4, f"max abs difference {difference:.3g}"
    assert tokens == oracle.tokens


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_the_legacy_client_gets_transformers_hidden_states_pooled(family_exports, start_bridge, legacy_client,
                                                                    oracles, family, configuration):
    if (family, configuration) == ("xlm-roberta", "REDUCE_MEAN"):
        pytest.skip("served as a new user serves it: test_a_new_user_serves_an_xlm_roberta_folder_as_it_is")
    strategy, layers = CONFIGURATIONS[configuration]
    with start_bridge("-model_dir", str(family_exports.folder(family, configuration)), "-show_tokens_to_client",
                      "--triton-url", family_exports.triton_url) as bridge:
        vectors, tokens, config = encode(bridge, legacy_client, SENTENCES)
    check_served(vectors, tokens, oracles(family), strategy, layers)
    assert (config["max_seq_len"], config["pooling_strategy"]) == (MAX_SEQ_LEN, PoolingStrategy[strategy].value)
    assert config["model_type"] == family


def test_a_new_user_serves_an_xlm_roberta_folder_as_it_is(family_folders, start_bridge, legacy_client, oracles,
                                                          tmp_path):
    """bert-serving-start -model_dir <an XLMRobertaModel folder>: the original's defaults, exported on the fly."""
    with start_bridge("-model_dir", str(family_folders.model("xlm-roberta")), "-show_tokens_to_client",
                      "-cache_dir", str(tmp_path)) as bridge:
        vectors, tokens, config = encode(bridge, legacy_client, SENTENCES)
    check_served(vectors, tokens, oracles("xlm-roberta", XLMR_DEFAULT_MAX_SEQ_LEN), "REDUCE_MEAN", (-2,))
    assert (config["max_seq_len"], config["pooling_layer"]) == (XLMR_DEFAULT_MAX_SEQ_LEN, [-2])


def test_auto_serves_what_sentence_transformers_encodes(family_exports, family_folders, start_bridge, legacy_client,
                                                        family):
    """The AUTO export (the default model) beside the family's FIRST_TOKEN export (bert-as-service semantics) on one
    bridge: ZeroMQ and /v1/embeddings give SentenceTransformer.encode; /v1/embeddings takes each input as one text, as
    it is for the AUTO model, stripped for the other; ZeroMQ and /encode keep splitting 'a ||| b'."""
    from openai import OpenAI
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from harness import free_port

    tokenizer = AutoTokenizer.from_pretrained(str(family_folders.model(family)))  # the FIRST_TOKEN export's source
    model = SentenceTransformer(str(family_folders.sentence_transformers(family)), device="cpu")
    expected = model.encode(ST_SENTENCES, convert_to_numpy=True)
    http_port = free_port()
    auto, original = f"{family}-auto", f"{family}-first-token"
    with start_bridge("-model_dir", f"{auto}={family_exports.folder(family, 'AUTO')}",
                      "-model_dir", f"{original}={family_exports.folder(family, 'FIRST_TOKEN')}",
                      "--triton-url", family_exports.triton_url, "-http_port", str(http_port)) as bridge:
        vectors, _, config = encode(bridge, legacy_client, ST_SENTENCES, show_tokens=False)
        pair_vectors, _, _ = encode(bridge, legacy_client, [AS_IS[0]], show_tokens=False)
        client = OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="unused", max_retries=0, timeout=120)
        assert client.models.list().data[0].id == auto
        over_http = embeddings(client, auto, ST_SENTENCES)
        as_is = embeddings(client, auto, AS_IS)
        original_texts = embeddings(client, original, AS_IS)
        original_ids = embeddings(client, original, [tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
                                                     for text in AS_IS])
        original_encode = post_encode(http_port, original, AS_IS)
    assert vectors.shape == over_http.shape == expected.shape
    assert float(np.abs(vectors - expected).max()) <= 1e-5
    assert float(np.abs(over_http - expected).max()) <= 1e-5
    assert config["sentence_transformers"]["pooling_mode"] == FAMILIES[family].st_pooling
    assert config["max_seq_len"] == model.max_seq_length
    # /v1/embeddings: each input one text as it is, spaces and ' ||| ' included, as sentence-transformers takes it
    assert float(np.abs(as_is - model.encode(AS_IS, convert_to_numpy=True)).max()) <= 1e-5
    # ZeroMQ keeps the original's pairs on the same model
    first, second = AS_IS[0].split(" ||| ")
    assert float(np.abs(pair_vectors - model.encode([(first, second)], convert_to_numpy=True)).max()) <= 1e-5
    # bert-as-service semantics: one text, stripped as the original strips its lines (the tokenizer's ids of the
    # stripped text); the texts without ' ||| ' as /encode gives them, the one with it unlike /encode's pair
    assert float(np.abs(original_texts - original_ids).max()) <= 1e-6
    assert float(np.abs(original_texts[1:] - original_encode[1:]).max()) <= 1e-6
    assert float(np.abs(original_texts[0] - original_encode[0]).max()) > 1e-3


def embeddings(client, model: str, inputs: list) -> np.ndarray:
    response = client.embeddings.create(input=inputs, model=model, encoding_format="float")
    return np.array([d.embedding for d in response.data], np.float32)


def post_encode(http_port: int, model: str, texts: list[str]) -> np.ndarray:
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/encode", headers={"content-type": "application/json"},
                                     data=json.dumps({"id": 1, "texts": texts, "model": model}).encode())
    with urllib.request.urlopen(request, timeout=120) as reply:
        return np.array(json.loads(reply.read())["result"], np.float32)


@pytest.mark.parametrize("architecture", ["deberta-v2", "gpt2"])
def test_an_unsupported_architecture_is_refused_in_one_line_at_export_and_at_start(tmp_path, architecture):
    from transformers import AutoConfig

    folder = tmp_path / architecture
    AutoConfig.for_model(architecture).save_pretrained(folder)
    export = subprocess.run([sys.executable, "-m", "bert_exporter.cli", "-model_dir", str(folder), "-output",
                             str(tmp_path / "repository")], capture_output=True, text=True, timeout=120)
    start = subprocess.run([sys.executable, "-m", "bert_bridge.cli", "-model_dir", str(folder), "-cache_dir",
                            str(tmp_path / "cache")], capture_output=True, text=True, timeout=120)
    for result, marker in ((export, "bert-export: error: "), (start, " E ")):
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        errors = [line for line in result.stderr.splitlines() if marker in line]
        assert len(errors) == 1, result.stderr
        assert f"model_type {architecture!r}" in errors[0]
        assert all(name in errors[0] for name in ("bert", "roberta", "xlm-roberta", "camembert", "distilbert",
                                                  "mpnet")), errors[0]
    assert not (tmp_path / "repository").exists() and not (tmp_path / "cache" / "models").exists()



def test_each_export_carries_the_familys_own_tokenizer(family_exports, family):
    from bert_exporter.manifest import ExportManifest

    folder = family_exports.folder(family, "FIRST_TOKEN")
    manifest = ExportManifest.load(folder)
    assert (manifest.model_type, manifest.token_types) == (family, False)
    assert (manifest.tokenizer_file, manifest.vocab_file) == ("tokenizer.json", None)
    assert (folder / "tokenizer.json").is_file() and not (folder / "vocab.txt").exists()
    assert manifest.special_tokens == FAMILIES[family].special_tokens
    assert manifest.pair_separators == FAMILIES[family].pair_separators


def test_cased_tokenization_is_refused_for_a_tokenizer_that_lower_cases(family_folders, tmp_path):
    from bert_exporter.errors import OptionError
    from bert_exporter.export import ExportOptions, export_model

    options = ExportOptions(model_dir=family_folders.model("distilbert"), output=tmp_path, cased_tokenization=True)
    with pytest.raises(OptionError, match="-cased_tokenization: the distilbert model's own tokenizer lower-cases"):
        export_model(options)
    assert not any(tmp_path.iterdir())
