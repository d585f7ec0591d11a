"""Resolves a model source into what the exporter needs: the config, the tokenizer and the weights.

The original's rules: config (``-config_name``) and vocabulary come from ``-model_dir``; weights come from
``-tuned_model_dir`` when given, else from ``-model_dir`` (a Google checkpoint named ``-ckpt_name``, or a Hugging Face
folder). HF folders name their config ``config.json``, which is used when ``-config_name`` is absent. A BERT's
vocabulary is ``vocab.txt`` (a folder with only ``tokenizer.json`` gets its WordPiece vocabulary written out as
``vocab.txt``); every other family is served with its own ``tokenizer.json`` (tokenizer_files.py), which it must have.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .encoder_config import EncoderConfig, read_config as read_config_file
from .errors import SourceError
from .manifest import VOCAB_FILE
from .options import ExportOptions
from .tokenizer_files import TokenizerFacts, read_tokenizer_facts

HF_CONFIG = "config.json"
TOKENIZER_JSON = "tokenizer.json"


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    config: EncoderConfig
    config_path: Path
    vocab: Optional[list[str]]  # BERT's WordPiece vocabulary, token per id; None for the other families
    tokenizer: Optional[TokenizerFacts]  # the model's own tokenizer (every family but BERT)
    weights: dict[str, np.ndarray]
    weights_path: str


def config_path(model_dir: Path, config_name: str) -> Path:
    """The config file the options point at; raises SourceError when there is none."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SourceError(f"model folder {model_dir} does not exist")
    for candidate in (model_dir / config_name, model_dir / HF_CONFIG):
        if candidate.is_file():
            return candidate
    raise SourceError(f"{model_dir} has neither {config_name} (Google BERT) nor {HF_CONFIG} (Hugging Face)")


def read_vocab(model_dir: Path) -> list[str]:
    model_dir = Path(model_dir)
    vocab_txt = model_dir / VOCAB_FILE
    if vocab_txt.is_file():
        # split("\n"), not splitlines(): multilingual vocabularies hold tokens such as U+2028 that splitlines breaks.
        text = vocab_txt.read_text(encoding="utf-8")
        lines = [line.rstrip("\r") for line in text.split("\n")]
        return lines[:-1] if text.endswith("\n") else lines
    tokenizer_json = model_dir / TOKENIZER_JSON
    if tokenizer_json.is_file():
        model = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("model", {})
        if model.get("type") != "WordPiece":
            raise SourceError(f"{tokenizer_json} is a {model.get('type')} tokenizer, not BERT's WordPiece")
        by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
        return [token for token, _ in by_id]
    raise SourceError(f"{model_dir} has neither {VOCAB_FILE} nor {TOKENIZER_JSON}")


def read_config(options: ExportOptions) -> tuple[EncoderConfig, Path]:
    path = config_path(options.model_dir, options.config_name)
    return read_config_file(path), path


def read_source(options: ExportOptions) -> ModelSource:
    config, path = read_config(options)
    if config.model_type == "bert":
        vocab, tokenizer = read_vocab(options.model_dir), None
    else:
        vocab, tokenizer = None, read_tokenizer_facts(options.model_dir, model_type=config.model_type)
    size = len(vocab) if vocab is not None else tokenizer.vocab_size
    if size > config.vocab_size:
        raise SourceError(f"the vocabulary has {size} tokens but {path} says vocab_size {config.vocab_size}")
    from .families import family_for

    weights, weights_path = family_for(config.model_type).read_weights(options.weights_dir, config=config,
                                                                       ckpt_name=options.ckpt_name)
    dense = (options.sentence_transformers or {}).get("dense")
    if dense:  # -pooling_strategy AUTO on a model with Dense modules after the pooling
        from .sentence_transformers import dense_weights

        weights.update(dense_weights(options.model_dir, dense))
    if options.head is not None:  # a classification or SPLADE head after the encoder
        from .head_source import head_weights

        weights.update(head_weights(options.weights_dir, options.head, weights, config))
    return ModelSource(config=config, config_path=path, vocab=vocab, tokenizer=tokenizer, weights=weights,
                       weights_path=weights_path)
