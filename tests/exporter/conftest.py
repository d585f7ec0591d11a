"""Fixtures for the exporter's tests: small BERTs in every source format, and the oracle.

The oracle is someone else's implementation: transformers' ``BertModel(output_hidden_states=True)`` with the original
bert-as-service pooling formulas written out in numpy here. The strategy x layer matrix runs on a tiny random BERT
(4 layers, hidden 32) so that its dozens of exports fit the time budget; the packaged MiniLM is exported
only a couple of times.

Sources built from the same tiny weights:
- ``tiny_hf``: an HF folder written by ``save_pretrained`` (safetensors, keys without ``bert.``);
- ``tiny_google``: a genuine TF1 name-based checkpoint (``tf.compat.v1.train.Saver``) with Google's variable names,
  ``bert_config.json`` and ``vocab.txt``; the name mapping (tests/export_oracle.py) is written independently of the
  exporter's weights.py;
- ``tiny_tuned``: a checkpoint-only folder holding perturbed weights (plus optimizer slots and a classifier head, as
  fine-tuned checkpoints have), used as ``-tuned_model_dir`` over ``tiny_google``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from export_oracle import TINY, google_variables, state_of, write_google_checkpoint, write_vocab
from tiny_models import perturbed


@dataclass
class Source:
    """One way to hand the exporter a model, and the transformers model its output must match."""

    name: str
    model_dir: Path
    oracle: object
    tuned_model_dir: Path | None = None

    def options(self, **kwargs) -> dict:
        return {"model_dir": self.model_dir, "tuned_model_dir": self.tuned_model_dir, **kwargs}


@pytest.fixture(scope="session")
def tiny_model():
    import torch
    import transformers

    torch.manual_seed(1234)
    return perturbed(transformers.BertModel(transformers.BertConfig(**TINY)).eval())


@pytest.fixture(scope="session")
def tiny_hf(tiny_model, tmp_path_factory) -> Source:
    folder = tmp_path_factory.mktemp("tiny-hf")
    tiny_model.save_pretrained(folder)
    write_vocab(folder, TINY["vocab_size"])
    return Source(name="hf", model_dir=folder, oracle=tiny_model)


@pytest.fixture(scope="session")
def tiny_google(tiny_model, tmp_path_factory) -> Source:
    folder = tmp_path_factory.mktemp("tiny-google")
    config = {k: v for k, v in TINY.items() if k != "layer_norm_eps"}  # Google's bert_config.json has no eps
    (folder / "bert_config.json").write_text(json.dumps(config))
    write_vocab(folder, TINY["vocab_size"])
    variables = google_variables(state_of(tiny_model), TINY["num_hidden_layers"])
    write_google_checkpoint(folder / "bert_model.ckpt", variables)
    return Source(name="google", model_dir=folder, oracle=tiny_model)


@pytest.fixture(scope="session")
def tiny_tuned(tiny_model, tiny_google, tmp_path_factory) -> Source:
    import copy

    import torch

    torch.manual_seed(99)
    tuned = perturbed(copy.deepcopy(tiny_model), scale=0.1)
    folder = tmp_path_factory.mktemp("tiny-tuned")  # checkpoint only: config and vocab come from -model_dir
    variables = google_variables(state_of(tuned), TINY["num_hidden_layers"])
    variables.update({
        "bert/encoder/layer_0/output/dense/kernel/adam_m": np.ones((TINY["intermediate_size"], TINY["hidden_size"]),
                                                                   np.float32),
        "output_weights": np.ones((2, TINY["hidden_size"]), np.float32),
        "output_bias": np.zeros((2,), np.float32),
    })
    write_google_checkpoint(folder / "model.ckpt-1000", variables)
    return Source(name="tuned", model_dir=tiny_google.model_dir, oracle=tuned, tuned_model_dir=folder)


@pytest.fixture(scope="session")
def sources(tiny_hf, tiny_google, tiny_tuned) -> dict[str, Source]:
    return {s.name: s for s in (tiny_hf, tiny_google, tiny_tuned)}


@pytest.fixture(scope="session")
def export_tiny(tmp_path_factory, sources):
    """``export_tiny(source_name, **options) -> model folder``; identical requests are exported once per session."""
    from bert_exporter.export import ExportOptions, export_model

    repository = tmp_path_factory.mktemp("tiny-repository")
    cache: dict = {}

    def export(source: str, **kwargs) -> Path:
        key = (source, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key not in cache:
            kwargs.setdefault("target", "onnx")
            if source == "tuned":
                kwargs.setdefault("ckpt_name", "model.ckpt-1000")
            options = ExportOptions(output=repository, name=f"m{len(cache)}", **sources[source].options(**kwargs))
            cache[key] = export_model(options)
        return cache[key]

    return export
