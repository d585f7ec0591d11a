"""The bridge's tokenization: the original bert-as-service 1.10 server's, token for token, for every model family.

This module owns everything between a client's sentences and the three INT32 tensors the model takes: splitting text
into the model's tokens, the ``' ||| '`` sentence pairs, tokenized input (``list[list[str]]``) and its ``'|||'``
token, the family's special tokens around them, truncation, ``-mask_cls_sep``, ``-no_special_token``, ``max_seq_len``
NONE, the tokens reported to the client, and padding.

Reference: the original's ``extract_features.py`` (``convert_lst_to_features``, ``_truncate_seq_pair``,
``read_examples``, ``read_tokenized_examples``) and its ``tokenization.py``; see
``shared/reference/original-server-semantics.md`` section 6.

Families differ in three things only, which ``SequenceTemplate`` holds: the special tokens (BERT's [CLS]/[SEP]/[UNK],
RoBERTa's <s>/</s>/<unk>, ...), how many separators stand between a pair's parts (``[CLS] a [SEP] b [SEP]`` against
``<s> a </s></s> b </s>``), and whether segment ids tell the parts apart (BERT) or are all zero (the families without
token types). Everything else -- the pair rules, truncation from the longer side with the special tokens counted in
max_seq_len, masks, tokenized input -- is the original's, for every family.

The modern routes (/v1/embeddings, the rerank routes, /predict, /embed_sparse) send texts as they are
(``encode_pairs``): a pair is explicit there, never found by a ' ||| ' inside a text, and a text is not stripped --
sentence-transformers and transformers do not strip, and a byte-level BPE tokenizer (RoBERTa's) makes a token of a
leading space -- unless the caller asks for the original's stripping (``strip``: /v1/embeddings on a model served with
bert-as-service semantics).

Splitting text into tokens: a Google BERT export (vocab.txt only) runs the original's ``FullTokenizer``: basic
tokenization, then WordPiece. The basic tokenization runs as a few C-level regular-expression passes whose character
classes are built from Python's ``unicodedata``, exactly the tables the original's pure-Python ``BasicTokenizer``
consulted; WordPiece runs in Rust (HF ``tokenizers``) on the resulting words, batched. The Rust ``BertNormalizer`` and
``BertPreTokenizer`` are deliberately not used there: they disagree with the original on about 830,000 code points
(unassigned code points, which the original drops as control characters; characters whose Unicode properties
changed after the Rust tables were made; the final-sigma rule of Python's ``str.lower``).
Every other export -- the other families, and sentence-transformers models exported with ``-pooling_strategy AUTO``
-- carries the model's own ``tokenizer.json``, which then splits text exactly as transformers does.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tokenizers import Tokenizer
from tokenizers.models import WordPiece

from bert_bridge.errors import InvalidRequest, StartupError

__all__ = ["SequenceTemplate", "BERT_TEMPLATE", "TokenizerSettings", "Encoding", "WordPieceTokenizer", "pad"]

PAIR_TOKEN = "|||"
# The original splits a sentence pair with this very expression, on the stripped line: greedy, so the last ' ||| '
# wins, and '.' does not cross a newline, so a line with a newline before ' ||| ' is no pair.
PAIR_RE = re.compile(r"^(.*) \|\|\| (.*)$")
# Google's WordpieceTokenizer as shipped with bert-as-service: longer words become [UNK].
MAX_INPUT_CHARS_PER_WORD = 100
# Google's _is_chinese_char ranges (bert-as-service's copy): each such character becomes a word of its own.
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
FIRST_ASTRAL = 0x10000
ASTRAL_RE = re.compile("[\U00010000-\U0010FFFF]")


@dataclass(frozen=True, kw_only=True)
class SequenceTemplate:
    """How a model family frames its sequences: ``cls a sep`` and ``cls a sep (sep ...) b sep``."""

    cls: str = "[CLS]"
    sep: str = "[SEP]"
    unk: str = "[UNK]"  # what tokenized input's unknown tokens become
    pair_separators: int = 1  # separators between a pair's parts: BERT 1, RoBERTa-style 2 (<s> a </s></s> b </s>)
    token_types: bool = True  # segment ids 0/1 for a pair's parts; all 0 for families without token types

    def __post_init__(self):
        if self.pair_separators < 1:
            raise StartupError(f"a pair needs at least one separator, not {self.pair_separators}")

    @property
    def pair_special_tokens(self) -> int:
        return 2 + self.pair_separators


BERT_TEMPLATE = SequenceTemplate()


@dataclass(frozen=True, kw_only=True)
class TokenizerSettings:
    """How sentences become model inputs; the original server's flags of the same names, and the model's files."""

    # Google's vocab.txt (BERT): the ids, and the original's WordPiece when there is no tokenizer_file.
    vocab_file: Path | None = None
    do_lower_case: bool = True  # False with -cased_tokenization (the original's tokenization only)
    max_seq_len: int | None = 25  # None = the original's NONE (dynamic length)
    max_position_embeddings: int = 512  # cap for NONE: the most tokens one sequence may have
    mask_cls_sep: bool = False  # input_mask 0 at the special tokens, exactly as the original's extract_features
    no_special_token: bool = False  # tokenized input only: no special tokens added
    # The model's own tokenizer.json: it splits text (do_lower_case does not apply) and, without a vocab_file,
    # holds the vocabulary.
    tokenizer_file: Path | None = None
    template: SequenceTemplate = BERT_TEMPLATE
    # How a pair too long for max_seq_len is cut: "original" (the original's _truncate_seq_pair) or "longest_first"
    # (transformers' and sentence-transformers', which models with heads were trained and are run with).
    pair_truncation: str = "original"

    def __post_init__(self):
        for name in ("vocab_file", "tokenizer_file"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.vocab_file is None and self.tokenizer_file is None:
            raise StartupError("a tokenizer needs a vocab.txt or a tokenizer.json")
        # The original's check_max_seq_len: an int > 3 (room for [CLS] a [SEP] b [SEP]) or NONE.
        if self.max_seq_len is not None and (isinstance(self.max_seq_len, bool) or self.max_seq_len <= 3):
            raise StartupError(f"max_seq_len must be an integer > 3 or NONE, not {self.max_seq_len!r}")
        if self.max_position_embeddings <= 3:
            raise StartupError(f"max_position_embeddings must be > 3, not {self.max_position_embeddings}")
        # The original accepted this and then failed inside the model on long input; refuse it up front.
        if self.max_seq_len is not None and self.max_seq_len > self.max_position_embeddings:
            raise StartupError(f"max_seq_len={self.max_seq_len} exceeds the model's "
                               f"max_position_embeddings={self.max_position_embeddings}")

    @property
    def length_limit(self) -> int:
        """The longest sequence, special tokens included: max_seq_len, or the model's limit for NONE."""
        return self.max_position_embeddings if self.max_seq_len is None else self.max_seq_len


@dataclass(frozen=True)
class Encoding:
    """One sentence (or pair), unpadded."""

    input_ids: list[int]
    input_mask: list[int]
    segment_ids: list[int]
    tokens: list[str]  # what the original reported to the client: the special tokens too, the unknown token for OOV
    # How many of the tokens are special tokens added here (2, 2 + the pair separators for a pair, 0 with
    # -no_special_token); see batch_length.
    num_special_tokens: int = field(default=2, compare=False, repr=False)
    truncated: bool = field(default=False, compare=False, repr=False)  # tokens were cut to fit max_seq_len


class WordPieceTokenizer:
    """The original server's ``FullTokenizer`` plus ``convert_lst_to_features``, for one model and settings; the
    model's own tokenizer.json replaces ``FullTokenizer`` where the export carries one (the name is the original's:
    for the other families the pieces are theirs, SentencePiece or byte-level BPE)."""

    def __init__(self, settings: TokenizerSettings):
        self.settings = settings
        self.template = template = settings.template
        self._model_tokenizer = _load_model_tokenizer(settings.tokenizer_file) if settings.tokenizer_file else None
        if settings.vocab_file is not None:
            self.vocab = _load_vocab(settings.vocab_file)
        else:
            self.vocab = self._model_tokenizer.get_vocab(with_added_tokens=True)
        missing = [t for t in (template.cls, template.sep, template.unk) if t not in self.vocab]
        if missing:
            source = settings.vocab_file or settings.tokenizer_file
            raise StartupError(f"vocabulary {source} lacks {', '.join(missing)}")
        self.vocab_size = max(self.vocab.values()) + 1
        self._token_of_id = {index: token for token, index in self.vocab.items()}
        self._cls, self._sep, self._unk = (self.vocab[t] for t in (template.cls, template.sep, template.unk))
        self._basic = _BasicTokenizer(settings.do_lower_case)
        # WordPiece alone: the words arrive already split and normalized by _BasicTokenizer.
        self._wordpiece = Tokenizer(WordPiece(self.vocab, unk_token=template.unk,
                                              max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))

    def encode(self, texts: list) -> list[Encoding]:
        """texts: list[str] (a '|||' splits a pair) or list[list[str]] (pre-tokenized; detected like the original:
        all(isinstance(el, list) for el in texts); a '|||' token splits a pair). Truncation: single sequences
        right-truncated to max_seq_len-2 content tokens; pairs truncated from the longer side (the original's
        _truncate_seq_pair) until they fit with their special tokens; with max_seq_len None, cap at
        max_position_embeddings."""
        if not isinstance(texts, list):
            raise InvalidRequest(f"expected a list of sentences or of token lists, not {type(texts).__name__}")
        if not texts:
            raise InvalidRequest("expected at least one sentence, got an empty list")
        if all(isinstance(el, list) for el in texts):
            return [self._assemble(a, b, tokenized=True) for a, b in self._tokenized_parts(texts)]
        return [self._assemble(a, b, tokenized=False) for a, b in self._text_parts(texts)]

    def encode_pairs(self, pairs: list, *, strip: bool = False) -> list[Encoding]:
        """(first, second) texts, second None for a single text: the modern routes' explicit pairs (a rerank's query
        and document) and single texts (an OpenAI input), taken as they are -- no ' ||| ' in them splits anything,
        and nothing is stripped unless ``strip`` (each text then stripped as the original strips its lines)."""
        if not isinstance(pairs, list) or not pairs:
            raise InvalidRequest("expected at least one input")
        texts = []
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                    and (pair[1] is None or isinstance(pair[1], str))):
                raise InvalidRequest(f"input {i} is not a text nor a pair of texts")
            if not pair[0] or pair[1] == "":
                raise InvalidRequest(f"input {i} has an empty text")
            texts += [part.strip() if strip else part for part in pair if part is not None]
        pieces = iter(self._split(texts))
        return [self._assemble(next(pieces), [] if second is None else next(pieces), tokenized=False)
                for _, second in pairs]

    def encode_token_ids(self, token_ids: list) -> list[Encoding]:
        """Lists of vocabulary ids (the OpenAI API's token input), taken as the content of single sequences, like
        tokenized input: no splitting, no pairs, right-truncated to max_seq_len-2 and wrapped in the special tokens
        (both omitted with -no_special_token, as for tokenized input)."""
        if not isinstance(token_ids, list) or not token_ids:
            raise InvalidRequest("expected a non-empty list of token id lists")
        encodings = []
        for i, ids in enumerate(token_ids):
            if not isinstance(ids, list) or not ids:
                raise InvalidRequest(f"input {i} is not a non-empty list of token ids")
            for j, token_id in enumerate(ids):
                if isinstance(token_id, bool) or not isinstance(token_id, int):
                    raise InvalidRequest(f"input {i}, token {j} is not an integer but {type(token_id).__name__}")
                if not 0 <= token_id < self.vocab_size:
                    # The usual cause: a client tokenized the text for OpenAI's models (tiktoken) and sent those ids.
                    raise InvalidRequest(f"input {i}, token {j}: id {token_id} is outside the model's vocabulary "
                                         f"(0 to {self.vocab_size - 1}): token ids must be this model's vocabulary "
                                         "ids, and these look like another tokenizer's, such as tiktoken's that "
                                         "LangChain's OpenAIEmbeddings sends by default; send the text instead "
                                         "(LangChain: check_embedding_ctx_length=False; docs/HTTP.md)")
            encodings.append(self._assemble(ids, [], tokenized=True))
        return encodings

    def batch_length(self, encodings: list[Encoding]) -> int:
        """The original's sequence length for a batch under max_seq_len NONE (the T of [B, T, D] with pooling NONE):
        longest content + a pair's special tokens if the batch has a pair, else + 2, capped at
        max_position_embeddings. It can exceed the longest encoding (a batch with a pair; -no_special_token); pad
        to it to return what the original returned."""
        longest = max(len(e.input_ids) - e.num_special_tokens for e in encodings)
        extra = self.template.pair_special_tokens if any(e.num_special_tokens > 2 for e in encodings) else 2
        return min(longest + extra, self.settings.max_position_embeddings)

    def _text_parts(self, texts: list) -> list[tuple[list[int], list[int]]]:
        """Token ids of each sentence's first and second part (the second empty when there is no pair)."""
        part_texts, owners = [], []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                kind = "a list (mixed with strings)" if isinstance(text, list) else type(text).__name__
                raise InvalidRequest(f"sentence {i} is not a string but {kind}")
            line = text.strip()
            match = PAIR_RE.match(line) if " ||| " in line else None
            for part in match.groups() if match else (line,):
                part_texts.append(part)
                owners.append(i)
        pieces = self._split(part_texts)
        parts = [([], []) for _ in texts]
        for i, owner in enumerate(owners):
            # A pair's second part directly follows its first, under the same owner.
            parts[owner][1 if i and owners[i - 1] == owner else 0].extend(pieces[i])
        return parts

    def _split(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text: the model's own tokenizer when it has one, else the original's WordPiece."""
        if self._model_tokenizer is None:
            vocab = self.vocab
            return [[vocab[t] for t in tokens]
                    for tokens in self._wordpieces([self._basic.tokenize(text) for text in texts])]
        try:
            encodings = self._model_tokenizer.encode_batch(texts, add_special_tokens=False)
        except Exception as e:  # tokenizers raises bare Exceptions
            raise InvalidRequest(f"the model's tokenizer failed: {e}") from e
        # Ids, not token strings: SentencePiece models name an unknown piece by its text, with the unknown id.
        return [encoding.ids for encoding in encodings]

    def _wordpieces(self, word_lists: list[list[str]]) -> list[list[str]]:
        """WordPiece over lists of words. Most words are whole vocabulary entries, which WordPiece keeps as they are:
        a dict lookup here is cheaper than a trip through Rust. The others go to Rust, once each, in one batch."""
        vocab = self.vocab
        whole = {w for words in word_lists for w in words if w in vocab and len(w) <= MAX_INPUT_CHARS_PER_WORD}
        others = list({w for words in word_lists for w in words if w not in whole})
        try:
            split = self._wordpiece.encode_batch([[w] for w in others], is_pretokenized=True, add_special_tokens=False)
        except Exception as e:  # tokenizers raises bare Exceptions; the words come cleaned, so this is unexpected
            raise InvalidRequest(f"WordPiece failed: {e}") from e
        pieces = {w: e.tokens for w, e in zip(others, split)}
        return [[p for w in words for p in ((w,) if w in whole else pieces[w])] for words in word_lists]

    def _tokenized_parts(self, texts: list[list]) -> list[tuple[list[int], list[int]]]:
        """The original's read_tokenized_examples + mark_unk_tokens: no splitting, no lower-casing, an exact
        vocabulary lookup per token (the unknown token for the others), the first '|||' token splitting a pair."""
        parts = []
        vocab, unk = self.vocab, self._unk
        for i, tokens in enumerate(texts):
            if not tokens:
                raise InvalidRequest(f"sentence {i} is an empty token list")
            for j, token in enumerate(tokens):
                if not isinstance(token, str):
                    raise InvalidRequest(f"sentence {i}, token {j} is not a string but {type(token).__name__}")
            ids = [vocab.get(t, unk) for t in tokens]
            if PAIR_TOKEN in tokens:
                j = tokens.index(PAIR_TOKEN)
                parts.append((ids[:j], ids[j + 1:]))
            else:
                parts.append((ids, []))
        return parts

    def _assemble(self, ids_a: list[int], ids_b: list[int], *, tokenized: bool) -> Encoding:
        """The original's convert_lst_to_features for one example, without the padding, in the family's template."""
        limit = self.settings.length_limit
        template = self.template
        no_special = tokenized and self.settings.no_special_token
        length = len(ids_a) + len(ids_b)
        if ids_b:  # an empty second part makes no pair, as in the original (`if tokens_b:`)
            truncate = _truncate_longest_first if self.settings.pair_truncation == "longest_first" else \
                _truncate_seq_pair
            ids_a, ids_b = truncate(ids_a, ids_b, limit - template.pair_special_tokens)
        elif no_special:
            ids_a = ids_a[:limit]
        else:
            # The original skipped this truncation for text input under -no_special_token, which only applies to
            # tokenized input, and then failed on long sentences; truncate as usual instead.
            ids_a = ids_a[:limit - 2]
        # As in the original, "is this a pair" is asked again after truncation, which can empty the second part.
        truncated = len(ids_a) + len(ids_b) < length
        if no_special and not ids_b:
            return Encoding(list(ids_a), [1] * len(ids_a), [0] * len(ids_a), self._tokens(ids_a),
                            num_special_tokens=0, truncated=truncated)
        keep = int(not self.settings.mask_cls_sep)
        input_ids = [self._cls, *ids_a, self._sep]
        input_mask = [keep, *[1] * len(ids_a), keep]
        if ids_b:
            separators = template.pair_separators - 1  # the first one closed part a
            input_ids += [*[self._sep] * separators, *ids_b, self._sep]
            input_mask += [*[keep] * separators, *[1] * len(ids_b), keep]
        second = len(ids_b) + 1 if ids_b and template.token_types else 0  # b and its closing separator
        segment_ids = [0] * (len(input_ids) - second) + [1] * second
        return Encoding(input_ids, input_mask, segment_ids, self._tokens(input_ids),
                        num_special_tokens=template.pair_special_tokens if ids_b else 2, truncated=truncated)

    def _tokens(self, ids: list[int]) -> list[str]:
        token_of_id, unk = self._token_of_id, self.template.unk
        return [token_of_id.get(i, unk) for i in ids]


def pad(encodings: list[Encoding], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, input_mask, segment_ids) as int32 [B, length], zero-padded."""
    longest = max((len(e.input_ids) for e in encodings), default=0)
    if length < longest:
        raise ValueError(f"cannot pad to {length}: an encoding has {longest} tokens")
    arrays = np.zeros((3, len(encodings), length), dtype=np.int32)
    for row, e in enumerate(encodings):
        n = len(e.input_ids)
        arrays[0, row, :n] = e.input_ids
        arrays[1, row, :n] = e.input_mask
        arrays[2, row, :n] = e.segment_ids
    return arrays[0], arrays[1], arrays[2]


def _truncate_seq_pair(tokens_a: list, tokens_b: list, max_length: int) -> tuple[list, list]:
    """The original's _truncate_seq_pair: drop the last token of the longer part (of b on a tie) until both fit."""
    len_a, len_b = len(tokens_a), len(tokens_b)
    while len_a + len_b > max(max_length, 0):
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return tokens_a[:len_a], tokens_b[:len_b]


def _truncate_longest_first(tokens_a: list, tokens_b: list, max_length: int) -> tuple[list, list]:
    """transformers' (the Rust tokenizers') "longest_first" for a pair: the shorter part is kept whole when the longer
    one can make room, else both get half of ``max_length``, the longer one the odd token (the second on a tie)."""
    len_a, len_b = len(tokens_a), len(tokens_b)
    if len_a + len_b <= max_length:
        return tokens_a, tokens_b
    short = min(len_a, len_b)
    if short <= max_length - short:
        long_ = max_length - short
    else:
        short, long_ = max_length // 2, max_length // 2 + max_length % 2
    if len_a > len_b:
        return tokens_a[:long_], tokens_b[:short]
    return tokens_a[:short], tokens_b[:long_]


def _load_model_tokenizer(path: Path) -> Tokenizer:
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises bare Exceptions
        raise StartupError(f"cannot load the model's tokenizer {path}: {e}") from e
    tokenizer.no_truncation()  # truncation and padding happen here, after the special tokens
    tokenizer.no_padding()
    return tokenizer


def _load_vocab(vocab_file: Path) -> dict[str, int]:
    """Google's load_vocab: one token per '\\n'-terminated line, stripped; a repeated token keeps its last index."""
    try:
        lines = vocab_file.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise StartupError(f"cannot read vocabulary {vocab_file}: {e}") from e
    if lines and not lines[-1]:
        lines.pop()  # the newline ending the last line starts no token
    return {token.strip(): index for index, token in enumerate(lines)}


class _BasicTokenizer:
    """Google's BasicTokenizer as regular-expression passes over the whole text, in the original's order: drop
    control characters, space out CJK characters, lower-case and strip accents (uncased only), split on
    whitespace and punctuation. Working on the whole text instead of per whitespace token changes nothing: lower(),
    NFD and mark removal never act across a whitespace character."""

    def __init__(self, do_lower_case: bool):
        self.do_lower_case = do_lower_case
        self._bmp, self._all = _unicode_patterns(astral=False), _unicode_patterns(astral=True)

    def tokenize(self, text: str) -> list[str]:
        patterns = self._patterns_for(text)
        text = patterns.cjk.sub(r" \g<0> ", patterns.control.sub("", text))
        if self.do_lower_case:  # the original strips accents iff it lower-cases
            text = unicodedata.normalize("NFD", text.lower())
            patterns = self._patterns_for(text)  # NFD takes a few CJK compatibility ideographs out of the BMP
            text = patterns.nonspacing_marks.sub("", text)
        return patterns.word.findall(text)

    def _patterns_for(self, text: str) -> _Patterns:
        # `re` tests BMP-only classes against a bitmap, and classes with astral ranges range by range: most text
        # has no astral character (emoji are astral) and gets the fast patterns.
        return self._all if ASTRAL_RE.search(text) else self._bmp


class _Patterns(NamedTuple):
    control: re.Pattern  # Google's _clean_text removals: NUL, U+FFFD, category C* but \t \n \r
    cjk: re.Pattern  # Google's _is_chinese_char
    nonspacing_marks: re.Pattern  # category Mn, what _run_strip_accents removes after NFD
    word: re.Pattern  # one punctuation character, or a run of characters neither punctuation nor whitespace


@functools.cache
def _unicode_patterns(astral: bool) -> _Patterns:
    """_BasicTokenizer's patterns for the BMP only, or for all of Unicode; built from Python's unicodedata."""
    limit = 0x110000 if astral else FIRST_ASTRAL
    sets = [[cp for cp in code_points if cp < limit] for code_points in _unicode_sets()]
    control, cjk, marks, punctuation, whitespace = sets
    word = f"{_char_class(punctuation)}|{_char_class(sorted(punctuation + whitespace), negate=True)}+"
    return _Patterns(re.compile(_char_class(control) + "+"), re.compile(_char_class(cjk)),
                     re.compile(_char_class(marks) + "+"), re.compile(word))


@functools.cache
def _unicode_sets() -> tuple[list[int], ...]:
    """Sorted code points of Google's character classes, from one pass over Unicode (about half a second)."""
    control, marks, punctuation, whitespace = ([] for _ in range(4))
    for cp in range(0x110000):
        char = chr(cp)
        category = unicodedata.category(char)
        # _clean_text drops NUL, U+FFFD and _is_control (category C*, but not \t \n \r, which are whitespace).
        is_control = cp == 0 or cp == 0xFFFD or (category[0] == "C" and char not in "\t\n\r")
        if is_control:
            control.append(cp)
        if category == "Mn":
            marks.append(cp)
        # _is_punctuation: every non-alphanumeric ASCII character, and category P*.
        if (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126) or category[0] == "P":
            punctuation.append(cp)
        # Words are what str.split() leaves after _clean_text mapped \t \n \r and Zs to ' '; every one of those is
        # isspace(), and so are U+2028/U+2029, which _clean_text keeps and split() still splits on.
        if char.isspace() and not is_control:
            whitespace.append(cp)
    cjk = sorted(cp for start, end in CJK_RANGES for cp in range(start, end + 1))
    return control, cjk, marks, punctuation, whitespace


def _char_class(code_points: list[int], negate: bool = False) -> str:
    """A regular expression for one character in (negated: not in) code_points. Astral members sit behind a
    one-range lookahead, so that BMP characters are still tested against a bitmap only."""
    bmp = _ranges([cp for cp in code_points if cp < FIRST_ASTRAL])
    astral = _ranges([cp for cp in code_points if cp >= FIRST_ASTRAL])
    if not astral:
        return f"[^{bmp}]" if negate else f"[{bmp}]"
    any_astral = f"{_escape(FIRST_ASTRAL)}-{_escape(0x10FFFF)}"
    if negate:
        return f"(?:[^{bmp}{any_astral}]|(?=[{any_astral}])[^{astral}])"
    return f"(?:[{bmp}]|(?=[{any_astral}])[{astral}])"


def _ranges(code_points: list[int]) -> str:
    """Sorted code points as the inside of a character class: runs become ranges."""
    parts, start = [], None
    for i, cp in enumerate(code_points):
        if start is None:
            start = cp
        if i + 1 == len(code_points) or code_points[i + 1] != cp + 1:
            parts.append(_escape(start) if start == cp else f"{_escape(start)}-{_escape(cp)}")
            start = None
    return "".join(parts)


def _escape(cp: int) -> str:
    return f"\\U{cp:08x}"
