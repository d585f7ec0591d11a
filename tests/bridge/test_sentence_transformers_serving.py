"""Sentence-transformers semantics through the unmodified 1.10 client: -pooling_strategy AUTO and -normalize.

The oracle is ``SentenceTransformer(folder).encode``: the model's own pooling, last layer, max_seq_length,
normalization and tokenizer. The sentences cover what the model's Rust tokenizer and the original's Python
tokenization treat differently (Greek final sigma, unassigned code points) and lengths past 128 and 256 tokens.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bert_bridge.config import parse_args
from bert_bridge.errors import StartupError
from bert_bridge.model_source import resolve_model, settle_model
from bert_exporter.options import packaged_model_dir

pytestmark = pytest.mark.slow

LONG_GERMAN = " ".join(["Die Universität Heidelberg wurde 1386 gegründet, die älteste Hochschule Deutschlands;"] * 12)
LONG_MIXED = " ".join(f"sentence {i}: 東京, Αθήνα, القاهرة, café, 🎉" for i in range(40))
SENTENCES = [
    "First do it, then do it right, then do it better.",
    "Café naïve résumé à Zürich",
    "ΟΔΥΣΣΕΥΣ ΚΑΙ ΠΗΝΕΛΟΠΗ ΣΤΗΝ ΙΘΑΚΗ",  # final sigma: str.lower() gives ς, the model's tokenizer σ
    "東京は日本の首都です。北京是中国的首都。",
    "مرحبا بالعالم، كيف حالك؟",
    "I ❤️ emoji 🎉👍🏽 and flags 🇫🇷",
    "unassigned \u0378 and \U000e0001 code points",  # the original drops them as control characters
    "Straße İstanbul ǅ ﬁne ＡＢＣ",
    LONG_GERMAN,  # about 300 tokens: past 128, truncated at 256
    LONG_MIXED,
]


def sentence_transformers_vectors(folder: Path, sentences: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(sentences, convert_to_numpy=True, batch_size=4)


def encode(bridge, legacy_client, sentences) -> tuple[np.ndarray, dict]:
    # check_length off: the long sentences are meant to be truncated at the model's max_seq_length
    with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=120000,
                                  check_length=False) as bc:
        return bc.encode(sentences), bc.server_config


def cls_pooling_folder(tmp_path: Path, pooling: dict) -> Path:
    """The packaged model's files linked into a folder whose 1_Pooling/config.json says ``pooling``."""
    folder = tmp_path / "st-model"
    (folder / "1_Pooling").mkdir(parents=True)
    for item in packaged_model_dir().iterdir():
        if item.is_file():
            (folder / item.name).symlink_to(item)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384, **pooling}))
    return folder


@pytest.fixture(scope="module")
def auto_bridge(start_bridge):
    with start_bridge("-pooling_strategy", "AUTO") as bridge:
        yield bridge


def test_auto_serves_what_sentence_transformers_encodes(auto_bridge, legacy_client):
    vectors, config = encode(auto_bridge, legacy_client, SENTENCES)
    expected = sentence_transformers_vectors(packaged_model_dir(), SENTENCES)
    assert vectors.shape == expected.shape == (len(SENTENCES), 384)
    assert np.abs(vectors - expected).max() <= 1e-5
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert (config["max_seq_len"], config["pooling_layer"], config["pooling_strategy"]) == (256, [-1], 2)
    assert config["normalize"] is True
    assert config["sentence_transformers"]["resolved_from"] == "AUTO"
    assert config["sentence_transformers"]["pooling_mode"] == "mean"


def test_auto_logs_what_it_resolved_to(auto_bridge):
    log = auto_bridge.log()
    assert "-pooling_strategy AUTO resolved sentence-transformers pooling 'mean' to REDUCE_MEAN over layer [-1]" in log
    ready = next(line for line in log.splitlines() if "ready to serve" in line)
    assert "pooling REDUCE_MEAN over layers [-1], max_seq_len 256" in ready


def test_an_exported_auto_folder_is_served_with_or_without_auto():
    model = resolve_model(parse_args(["-pooling_strategy", "AUTO"]))  # the auto_bridge's export, reused
    folder = str(model.folder)
    for flags in (["-model_dir", folder, "-pooling_strategy", "AUTO"], ["-model_dir", folder]):
        config = settle_model(parse_args(flags), model)
        assert (config.pooling_strategy, config.pooling_layer, config.max_seq_len) == ("REDUCE_MEAN", (-1,), 256)
        assert config.normalize is True
    with pytest.raises(StartupError, match="exported with other settings: -pooling_layer"):
        settle_model(parse_args(["-model_dir", folder, "-pooling_strategy", "AUTO", "-pooling_layer", "-2"]), model)


def test_auto_on_a_folder_exported_without_it_is_refused():
    model = resolve_model(parse_args([]))  # the default export: REDUCE_MEAN over layer -2
    with pytest.raises(StartupError, match="was not exported with -pooling_strategy AUTO"):
        settle_model(parse_args(["-model_dir", str(model.folder), "-pooling_strategy", "AUTO"]), model)


def test_cls_pooling_folder_matches_sentence_transformers(start_bridge, legacy_client, tmp_path):
    folder = cls_pooling_folder(tmp_path, {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    with start_bridge("-model_dir", str(folder), "-pooling_strategy", "AUTO") as bridge:
        vectors, config = encode(bridge, legacy_client, SENTENCES)
    expected = sentence_transformers_vectors(folder, SENTENCES)
    assert np.abs(vectors - expected).max() <= 1e-5
    assert config["pooling_strategy"] == 4 and config["sentence_transformers"]["pooling_mode"] == "cls"


def test_an_unsupported_pooling_mode_is_refused_at_start_in_one_line(tmp_path):
    folder = cls_pooling_folder(tmp_path, {"pooling_mode_mean_sqrt_len_tokens": True})
    result = subprocess.run([sys.executable, "-m", "bert_bridge.cli", "-model_dir", str(folder),
                             "-pooling_strategy", "AUTO", "-cache_dir", str(tmp_path / "cache")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " E " in line]
    assert len(errors) == 1 and "pooling mode 'mean_sqrt_len_tokens'" in errors[0], result.stderr


def test_normalize_gives_the_default_vectors_at_unit_length(start_bridge, default_bridge, legacy_client):
    sentences = SENTENCES[:6]
    default_vectors, _ = encode(default_bridge, legacy_client, sentences)
    with start_bridge("-normalize") as bridge:
        vectors, config = encode(bridge, legacy_client, sentences)
    expected = default_vectors / np.linalg.norm(default_vectors, axis=1, keepdims=True)
    assert np.abs(vectors - expected).max() <= 1e-6
    assert (config["normalize"], config["pooling_layer"], config["max_seq_len"]) == (True, [-2], 25)
    assert config["sentence_transformers"] is None
