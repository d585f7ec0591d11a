"""Heads of every family beyond BERT (issue 24): a RoBERTa, XLM-R, CamemBERT, DistilBERT and MPNet
``*ForSequenceClassification`` and ``*ForMaskedLM`` (random weights, the tiny shapes of test_export_families.py)
exported with their heads give transformers' logits, and the SPLADE definition on transformers' MLM logits, within
1e-4 on the same ids. The served path (each family's tokenizer and pair template) is tests/heads/."""
from __future__ import annotations

import numpy as np
import pytest
from test_export_families import MODEL_TYPES, batch, transformers_model, write_tokenizer
from tiny_models import perturbed

from bert_exporter.cli import main as bert_export
from bert_exporter.manifest import ExportManifest

LAYOUTS = {"distilbert": ("pre_classifier", "vocab_projector")}  # the others: RoBERTa's classifier and lm_head


def head_model(model_type: str, kind: str, folder):
    import torch
    import transformers

    config = transformers_model(model_type).config
    config.num_labels = 3
    auto = (transformers.AutoModelForSequenceClassification if kind == "classifier"
            else transformers.AutoModelForMaskedLM)
    torch.manual_seed(200 + 2 * MODEL_TYPES.index(model_type) + (kind == "masked_lm"))
    model = perturbed(auto.from_config(config).eval())
    model.save_pretrained(folder)
    write_tokenizer(folder)
    return model


def run(repository, name: str, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(repository / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["encodes"], feeds)[0]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_each_familys_heads_give_transformers_numbers(model_type, tmp_path):
    import torch

    feeds = batch([9, 17, 4], 17, seed=24)
    ids, mask = (torch.from_numpy(feeds[name].astype(np.int64)) for name in ("input_ids", "input_mask"))
    classifier = head_model(model_type, "classifier", tmp_path / "classifier")
    masked_lm = head_model(model_type, "masked_lm", tmp_path / "masked-lm")
    repository = tmp_path / "repository"
    assert bert_export(["-model_dir", str(tmp_path / "classifier"), "-target", "onnx", "-output", str(repository),
                        "-name", "classifier"]) == 0
    assert bert_export(["-model_dir", str(tmp_path / "masked-lm"), "-pooling_strategy", "SPLADE", "-target", "onnx",
                        "-output", str(repository), "-name", "splade"]) == 0
    with torch.no_grad():
        logits = classifier(input_ids=ids, attention_mask=mask).logits.numpy()
        mlm = masked_lm(input_ids=ids, attention_mask=mask).logits
    splade = (torch.log(1 + torch.relu(mlm)) * mask.unsqueeze(-1)).max(dim=1).values.numpy()
    assert np.abs(run(repository, "classifier", feeds) - logits).max() <= 1e-4
    assert np.abs(run(repository, "splade", feeds) - splade).max() <= 1e-4
    classify, sparse = ExportManifest.load(repository / "classifier"), ExportManifest.load(repository / "splade")
    assert (classify.task, classify.activation, classify.model_type) == ("classify", "softmax", model_type)
    assert (sparse.task, sparse.output_dim) == ("sparse", classifier.config.vocab_size)
    assert (classify.head["layout"], sparse.head["layout"]) == LAYOUTS.get(model_type, ("dense_out_proj", "lm_head"))
