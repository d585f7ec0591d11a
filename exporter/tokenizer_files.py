"""The tokenizer an export carries for the bridge, read from the model's own files.

A Google BERT export carries ``vocab.txt``: the bridge runs the original's tokenization on it. Every other family
(RoBERTa, XLM-R, CamemBERT, DistilBERT, MPNet), and a sentence-transformers model exported with AUTO, carries the
model's own ``tokenizer.json``, written as transformers 5 runs it -- its tokenizer classes keep the vocabulary (and
merges, and a SentencePiece charsmap) of ``tokenizer.json`` but rebuild the normalizer and pre-tokenizer from
``tokenizer_config.json``; a file that says otherwise (sentence-transformers 6 saves its ``do_lower_case`` as a
Lowercase there, which a CamemBERT or XLM-R class drops again on loading) is run the way transformers runs it.
The rebuild follows the tokenizer model: WordPiece as BertTokenizer (DistilBERT's and MPNet's classes are the same),
Unigram as the SentencePiece classes (XLM-R, CamemBERT), byte-level BPE as RobertaTokenizer; ModernBERT's file runs as
written (transformers gives it the generic TokenizersBackend).

What the bridge needs besides the file goes into the manifest (``TokenizerFacts``): the family's special tokens and
how many separators stand between a pair's parts, both read from the tokenizer's post-processor
(``[CLS] a [SEP] b [SEP]``, ``<s> a </s></s> b </s>``).

Only the standard library at module level: ``tokenizers`` loads where it is used.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import SourceError
from .manifest import VOCAB_FILE

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
# transformers 5 builds WordPiece tokenizers with these defaults when tokenizer_config.json does not say otherwise.
WORDPIECE_DEFAULTS = {"do_lower_case": True, "tokenize_chinese_chars": True, "strip_accents": None,
                      "unk_token": "[UNK]"}
# Families whose transformers tokenizer is TokenizersBackend: tokenizer.json runs exactly as written, whatever its
# model (ModernBERT's byte-level BPE keeps its own normalizer and pre-tokenizer).
AS_WRITTEN = {"modernbert"}
# Whether a word gets the leading space marker: the SentencePiece classes say yes, RobertaTokenizer no.
ADD_PREFIX_SPACE_DEFAULTS = {"Unigram": True, "BPE": False}


@dataclass(frozen=True, kw_only=True)
class TokenizerFacts:
    """What the manifest records about a model's own tokenizer."""

    special_tokens: dict  # cls, sep, pad, unk, mask (pad and mask None when the files name none)
    pair_separators: int  # 1: cls a sep b sep; 2: cls a sep sep b sep
    lowercases: bool  # the tokenizer lower-cases text (reported as the export's do_lower_case)
    vocab_size: int  # ids in use, added tokens included


def tokenizer_settings(model_dir: Path) -> dict:
    """tokenizer_config.json (special tokens as plain strings), or {} when the folder has none."""
    path = Path(model_dir) / TOKENIZER_CONFIG
    return {key: _content(value) for key, value in _read_json(path).items()} if path.is_file() else {}


def read_tokenizer_facts(model_dir: Path, *, model_type: str) -> TokenizerFacts:
    """The model's tokenizer as the bridge will run it; SourceError (one line) when it has none or one the bridge
    cannot frame."""
    tokenizer = model_tokenizer(model_dir, model_type=model_type, lowercase_first=False)
    path = Path(model_dir) / TOKENIZER_FILE
    cls, sep, pair_separators = _template(json.loads(tokenizer.to_str()).get("post_processor"), path)
    settings = {**_special_tokens_map(model_dir), **tokenizer_settings(model_dir)}
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    special = {"cls": cls, "sep": sep, "unk": settings.get("unk_token") or _model_unk(tokenizer),
               "pad": settings.get("pad_token"), "mask": settings.get("mask_token")}
    missing = [f"{name} {token!r}" for name, token in special.items()
               if token is not None and token not in vocab]
    if special["unk"] is None or missing:
        what = ", ".join(missing) if missing else "an unknown token"
        raise SourceError(f"{path}: the vocabulary lacks {what}")
    return TokenizerFacts(special_tokens=special, pair_separators=pair_separators,
                          lowercases=lowercases(tokenizer.normalizer), vocab_size=max(vocab.values()) + 1)


def model_tokenizer(model_dir: Path, *, model_type: str, lowercase_first: bool,
                    vocab: Optional[list[str]] = None):
    """The ``tokenizers.Tokenizer`` transformers 5 runs for the model in ``model_dir``, without truncation or
    padding. ``lowercase_first``: sentence-transformers' ``do_lower_case``, a Lowercase before everything (unless
    the normalizer has one already: sentence-transformers looks for a Lowercase, not at BertNormalizer's option).
    ``vocab``: BERT's exported vocab.txt, which a WordPiece model is built from (and must agree with the file's)."""
    from tokenizers import Tokenizer, normalizers

    model_dir = Path(model_dir)
    path = model_dir / TOKENIZER_FILE
    settings = tokenizer_settings(model_dir)
    if path.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises bare Exceptions
            raise SourceError(f"cannot read {path}: {e}") from e
        kind = json.loads(path.read_text(encoding="utf-8")).get("model", {}).get("type")
    elif vocab is not None or (model_type == "bert" and (model_dir / VOCAB_FILE).is_file()):
        from .source import read_vocab  # a BERT folder with only vocab.txt

        kind, tokenizer, vocab = "WordPiece", None, vocab if vocab is not None else read_vocab(model_dir)
    else:
        raise SourceError(f"{model_dir} has no {TOKENIZER_FILE}: a {model_type} model is served with its own "
                          f"tokenizer (save it with the model's transformers tokenizer, save_pretrained)")
    if model_type in AS_WRITTEN and tokenizer is not None:
        pass  # transformers runs the file as it is (TokenizersBackend)
    elif kind == "WordPiece":
        tokenizer = _wordpiece(tokenizer, settings, vocab, path)
    elif kind == "Unigram":
        _sentencepiece(tokenizer, settings, kind)
    elif kind == "BPE" and _is_byte_level(tokenizer):
        _byte_level_bpe(tokenizer, settings, kind)
    else:
        raise SourceError(f"{path}: a {kind or 'model-less'} tokenizer; the exporter serves WordPiece, Unigram "
                          f"(SentencePiece) and byte-level BPE tokenizers")
    if lowercase_first and not _has_lowercase(tokenizer.normalizer):
        tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), tokenizer.normalizer]
                                                    if tokenizer.normalizer else [normalizers.Lowercase()])
    tokenizer.no_truncation()  # the bridge truncates, to max_seq_len, after adding the special tokens itself
    tokenizer.no_padding()
    return tokenizer


def write_tokenizer(model_dir: Path, path: Path, *, model_type: str, lowercase_first: bool,
                    vocab: Optional[list[str]] = None) -> None:
    """``model_tokenizer`` as the export's tokenizer.json."""
    model_tokenizer(model_dir, model_type=model_type, lowercase_first=lowercase_first, vocab=vocab).save(str(path))


# --- transformers 5's rebuilds, per tokenizer model ----------------------------------------------------------------

def _wordpiece(tokenizer, settings: dict, vocab: Optional[list[str]], path: Path):
    """BertTokenizer (and DistilBERT's, MPNet's): WordPiece over the vocabulary, BertNormalizer and
    BertPreTokenizer configured by tokenizer_config.json whatever tokenizer.json says."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    settings = {**WORDPIECE_DEFAULTS, **settings}
    if vocab is not None:
        words = {token: index for index, token in enumerate(vocab)}
        if tokenizer is not None and tokenizer.get_vocab(with_added_tokens=False) != words:
            raise SourceError(f"{path} and the exported vocabulary (vocab.txt) disagree; they must be equal")
    else:
        words = tokenizer.get_vocab(with_added_tokens=False)
    if tokenizer is None:
        tokenizer = Tokenizer(WordPiece(words, unk_token=str(settings["unk_token"])))
        tokenizer.add_special_tokens([str(settings[name]) for name in
                                      ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
                                      if settings.get(name)])
    tokenizer.model = WordPiece(words, unk_token=str(settings["unk_token"]))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(settings["tokenize_chinese_chars"]),
        strip_accents=settings["strip_accents"], lowercase=bool(settings["do_lower_case"]))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


def _sentencepiece(tokenizer, settings: dict, kind: str) -> None:
    """XLMRobertaTokenizer, CamembertTokenizer: only a SentencePiece charsmap survives of the normalizer; words are
    split on whitespace and get the '▁' marker."""
    from tokenizers import normalizers, pre_tokenizers

    charsmap = _precompiled(json.loads(tokenizer.to_str()).get("normalizer"))
    tokenizer.normalizer = normalizers.Precompiled(base64.b64decode(charsmap)) if charsmap is not None else None
    prefix = settings.get("add_prefix_space", ADD_PREFIX_SPACE_DEFAULTS[kind])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always" if prefix else "never", split=True)])


def _byte_level_bpe(tokenizer, settings: dict, kind: str) -> None:
    """RobertaTokenizer: no normalizer, byte-level pre-tokenization."""
    from tokenizers import pre_tokenizers

    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=bool(settings.get("add_prefix_space", ADD_PREFIX_SPACE_DEFAULTS[kind])))


# --- reading the files -----------------------------------------------------------------------------------------------

def _template(post_processor: Optional[dict], path: Path) -> tuple[str, str, int]:
    """(cls, sep, separators between a pair's parts) from a post-processor: BertProcessing, RobertaProcessing, or a
    TemplateProcessing of the form ``cls $A sep`` / ``cls $A sep... $B sep``."""
    processors = (post_processor or {}).get("processors") if (post_processor or {}).get("type") == "Sequence" \
        else [post_processor]
    for processor in processors or []:
        kind = (processor or {}).get("type")
        if kind in ("BertProcessing", "RobertaProcessing"):
            return processor["cls"][0], processor["sep"][0], 1 if kind == "BertProcessing" else 2
        if kind == "TemplateProcessing":
            single = [_piece(item) for item in processor["single"]]
            pair = [_piece(item) for item in processor["pair"]]
            if (len(single) == 3 and single[1] == "$A" and None not in (single[0], single[2])
                    and pair[:3] == single and pair[-2:] == ["$B", single[2]]
                    and set(pair[3:-2]) <= {single[2]}):
                return single[0], single[2], len(pair) - 4
            raise SourceError(f"{path}: its template {' '.join(map(str, single))} / {' '.join(map(str, pair))} is "
                              f"not 'cls $A sep' / 'cls $A sep ... $B sep'")
    raise SourceError(f"{path} has no post-processor naming its special tokens (BertProcessing, RobertaProcessing or "
                      f"TemplateProcessing)")


def _piece(item: dict) -> Optional[str]:
    """A template item: a special token's name, or '$A'/'$B' for the sequences."""
    if "Sequence" in item:
        return f"${item['Sequence']['id']}"
    return item.get("SpecialToken", {}).get("id")


def _model_unk(tokenizer) -> Optional[str]:
    model = json.loads(tokenizer.to_str())["model"]
    if model.get("type") == "Unigram" and model.get("unk_id") is not None:
        return model["vocab"][model["unk_id"]][0]
    return model.get("unk_token")


def _special_tokens_map(model_dir: Path) -> dict:
    path = Path(model_dir) / SPECIAL_TOKENS_MAP
    return {key: _content(value) for key, value in _read_json(path).items()} if path.is_file() else {}


def _content(value):
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken's dict."""
    return value.get("content") if isinstance(value, dict) and "content" in value else value


def _precompiled(normalizer: Optional[dict]) -> Optional[str]:
    if not normalizer:
        return None
    for item in normalizer.get("normalizers", [normalizer]):
        if item.get("type") == "Precompiled" and item.get("precompiled_charsmap"):
            return item["precompiled_charsmap"]
    return None


def _is_byte_level(tokenizer) -> bool:
    return "ByteLevel" in json.dumps(json.loads(tokenizer.to_str()).get("pre_tokenizer"))


def _has_lowercase(normalizer) -> bool:
    from tokenizers import normalizers

    if isinstance(normalizer, normalizers.Sequence):
        return any(isinstance(item, normalizers.Lowercase) for item in normalizer)
    return isinstance(normalizer, normalizers.Lowercase)


def lowercases(normalizer) -> bool:
    """Whether a tokenizers normalizer lower-cases: a Lowercase, or BertNormalizer's option, anywhere in it."""
    from tokenizers import normalizers

    items = list(normalizer) if isinstance(normalizer, normalizers.Sequence) else [normalizer]
    return any(isinstance(item, normalizers.Lowercase)
               or (isinstance(item, normalizers.BertNormalizer) and item.lowercase) for item in items)


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"cannot read {path}: {e}") from e
