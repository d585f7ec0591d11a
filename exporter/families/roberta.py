"""RoBERTa, XLM-RoBERTa and CamemBERT: BERT's layers and weight names (under ``roberta.`` in task models), with

- positions counted from ``pad_token_id + 1``: transformers numbers the tokens that are not padding from there, and
  the bridge pads on the right, so a real token at position p reads row pad_token_id + 1 + p and a 514-row table
  holds 512 tokens;
- a token type table (one row in the published checkpoints) whose row 0 is added to every token: segment ids are
  ignored (the fused form folds the row into the word table);
- a pooler only in some checkpoints (RobertaModel saves one, task models do not): CLS_POOLED where it is saved.
"""
from __future__ import annotations

from pathlib import Path

MODEL_TYPES = ("roberta", "xlm-roberta", "camembert")
PREFIXES = ("roberta.",)  # the base model inside RobertaFor*, XLMRobertaFor*, CamembertFor*


def read_config(data: dict, path: Path):
    from ..encoder_config import EncoderConfig, absolute_positions, bert_shape, tokens_held
    from ..errors import SourceError

    shape = bert_shape(data, path)
    absolute_positions(data, path)
    model_type = str(data["model_type"])
    if data.get("is_decoder"):
        raise SourceError(f"{path}: this {model_type} is a decoder (is_decoder true); bert-export exports encoders")
    pad_token_id = data.get("pad_token_id", 1)
    if not isinstance(pad_token_id, int) or pad_token_id < 0:
        raise SourceError(f"{path}: pad_token_id {pad_token_id!r} is not a token id ({model_type} numbers its "
                          "positions from it)")
    offset = pad_token_id + 1
    # Defaults are transformers' own (RobertaConfig's), for configs that leave a key out.
    config = EncoderConfig(
        model_type=model_type,
        **shape,
        max_position_embeddings=tokens_held(int(data.get("max_position_embeddings", 512)), offset, path),
        type_vocab_size=int(data.get("type_vocab_size", 2)),
        token_types=False,
        position_offset=offset,
    )
    config.check(path)
    return config


def read_weights(folder: Path, *, config, ckpt_name: str) -> tuple[dict, str]:
    from ..weights import bert_name, load_hf_weights

    def neutral_name(hf_name: str) -> str | None:
        for prefix in PREFIXES:
            if hf_name.startswith(prefix):
                hf_name = hf_name[len(prefix):]
        return bert_name(hf_name)

    return load_hf_weights(folder, config=config, neutral_name=neutral_name)
