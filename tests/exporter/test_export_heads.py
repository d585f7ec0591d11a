"""Heads in the exported graph (issue 24): classification heads (logits) and SPLADE, against transformers' own models.

The exported model.onnx runs in onnxruntime on what the model's own tokenizer makes of the inputs; the oracles are
transformers' ``*ForSequenceClassification`` logits, sentence-transformers' ``CrossEncoder.predict`` and the SPLADE
definition on ``BertForMaskedLM`` (tests/head_models.py). What cannot go with a head is refused in one line.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from head_models import NLI_LABELS, classifier_logits, splade_vectors

from bert_exporter.cli import main as bert_export
from bert_exporter.manifest import ExportManifest

PAIRS = [("what is the capital of france?", "paris is the capital and most populous city of france."),
         ("how do tides work", "the moon's gravity pulls on the oceans, twice a day."),
         ("a short query", "a document far longer than the model reads " * 12)]  # cut longest-first
TEXTS = ["the cat sat on the mat", "splade expands a query with related terms", "a"]


def export(folder, repository, name, *flags) -> ExportManifest:
    assert bert_export(["-model_dir", str(folder), "-output", str(repository), "-name", name, *flags]) == 0
    return ExportManifest.load(repository / name)


def run_onnx(model_folder, folder, inputs) -> np.ndarray:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if isinstance(inputs[0], tuple):
        batch = tokenizer([a for a, _ in inputs], [b for _, b in inputs], padding=True, truncation=True,
                          return_tensors="np")
    else:
        batch = tokenizer(inputs, padding=True, truncation=True, return_tensors="np")
    feeds = {"input_ids": batch["input_ids"], "input_mask": batch["attention_mask"],
             "segment_ids": batch.get("token_type_ids", np.zeros_like(batch["input_ids"]))}
    session = ort.InferenceSession(str(model_folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["encodes"], {name: array.astype(np.int32) for name, array in feeds.items()})[0]


@pytest.mark.parametrize("num_labels", [1, 3])
def test_a_classifier_exports_its_head_and_gives_transformers_logits(head_models, tmp_path, num_labels):
    folder = head_models.classifier("bert", num_labels)
    manifest = export(folder, tmp_path, "classifier")
    for inputs in (PAIRS, TEXTS):
        logits = run_onnx(tmp_path / "classifier", folder, inputs)
        assert logits.shape == (len(inputs), num_labels)
        assert np.abs(logits - classifier_logits(folder, inputs)).max() <= 1e-5
    assert manifest.task == ("rerank" if num_labels == 1 else "classify")
    assert manifest.labels == (("LABEL_0",) if num_labels == 1 else tuple(NLI_LABELS.values()))
    # transformers' text-classification pipeline: sigmoid for one label, softmax for several
    assert manifest.activation == ("sigmoid" if num_labels == 1 else "softmax")
    assert (manifest.output_dim, manifest.max_seq_len, manifest.tokenizer_file) == (num_labels, 64, "tokenizer.json")
    assert manifest.head["layout"] == "pooler" and manifest.head["kind"] == "classification"


def test_a_cross_encoder_exports_what_predict_gives(head_models, tmp_path):
    from sentence_transformers import CrossEncoder

    folder = head_models.cross_encoder()
    manifest = export(folder, tmp_path, "cross-encoder", "-pooling_strategy", "AUTO")  # AUTO keeps the head
    logits = run_onnx(tmp_path / "cross-encoder", folder, PAIRS)[:, 0]
    expected = CrossEncoder(str(folder), device="cpu").predict(PAIRS)
    assert manifest.activation == "sigmoid" and manifest.head["source"] == "sentence-transformers CrossEncoder"
    assert np.abs(1 / (1 + np.exp(-logits)) - expected).max() <= 1e-6


def test_a_cross_encoders_saved_activation_is_recorded(head_models, tmp_path):
    folder = tmp_path / "identity"
    import shutil

    shutil.copytree(head_models.cross_encoder(), folder)
    settings = json.loads((folder / "config_sentence_transformers.json").read_text())
    settings["activation_fn"] = "torch.nn.modules.linear.Identity"
    (folder / "config_sentence_transformers.json").write_text(json.dumps(settings))
    assert export(folder, tmp_path / "repository", "identity").activation == "identity"
    settings["activation_fn"] = "my_package.Swish"
    (folder / "config_sentence_transformers.json").write_text(json.dumps(settings))
    assert bert_export(["-model_dir", str(folder), "-output", str(tmp_path / "repository"), "-name", "x"]) == 2


def test_splade_is_the_definition_on_the_masked_lm(head_models, tmp_path):
    folder = head_models.masked_lm()
    manifest = export(folder, tmp_path, "splade", "-pooling_strategy", "SPLADE")
    vectors = run_onnx(tmp_path / "splade", folder, TEXTS)
    expected = splade_vectors(folder, TEXTS)
    assert vectors.shape == expected.shape == (len(TEXTS), 30522)
    assert np.abs(vectors - expected).max() <= 1e-5
    assert (manifest.task, manifest.pooling_strategy, manifest.output_dim) == ("sparse", "SPLADE", 30522)


def test_a_named_pooling_strategy_exports_a_classifiers_encoder(head_models, tmp_path):
    manifest = export(head_models.classifier("bert", 3), tmp_path, "encoder", "-pooling_strategy", "REDUCE_MEAN")
    assert (manifest.task, manifest.head, manifest.output_dim, manifest.max_seq_len) == ("embed", None, 32, 25)


@pytest.mark.parametrize("case", ["splade without an MLM head", "normalize", "pooling_layer", "savedmodel",
                                  "unsupported family"])
def test_what_does_not_fit_a_head_is_refused_in_one_line(head_models, tmp_path, capfd, case):
    classifier = head_models.classifier("bert", 1)
    flags = {"splade without an MLM head": ["-model_dir", classifier, "-pooling_strategy", "SPLADE"],
             "normalize": ["-model_dir", classifier, "-normalize"],
             "pooling_layer": ["-model_dir", head_models.masked_lm(), "-pooling_strategy", "SPLADE",
                               "-pooling_layer", "-2"],
             "savedmodel": ["-model_dir", classifier, "-target", "savedmodel"],
             "unsupported family": ["-model_dir", tmp_path / "electra"]}[case]
    if case == "unsupported family":
        (tmp_path / "electra").mkdir()
        (tmp_path / "electra" / "config.json").write_text(json.dumps(
            {"model_type": "electra", "architectures": ["ElectraForSequenceClassification"]}))
    capfd.readouterr()
    assert bert_export([*map(str, flags), "-output", str(tmp_path / "repository")]) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if "error:" in line]
    expected = {"splade without an MLM head": "-pooling_strategy SPLADE needs a masked-language-model head",
                "normalize": "-normalize cannot go with the classification head",
                "pooling_layer": "the splade head decides -pooling_layer itself",
                "savedmodel": "-target savedmodel exports the encoder and its pooling only",
                "unsupported family": "model_type 'electra' is not a BERT nor another family"}[case]
    assert len(errors) == 1 and expected in errors[0], errors
    assert not (tmp_path / "repository").exists() or not any((tmp_path / "repository").iterdir())
