"""The bridge's tokenization against someone else's implementations of the original bert-as-service 1.10 server's.

Oracles: transformers' ``BertTokenizer`` (Rust ``tokenizers``) for ordinary text, pairs and truncation;
transformers' pure-Python ``BertTokenizerLegacy`` (a copy of Google's ``BasicTokenizer``/``WordpieceTokenizer``,
reading Python's ``unicodedata`` as the original did) where Unicode details decide; and, where the original server
differs from both (pair truncation on ties, the '|||' rules, tokenized input, -no_special_token), its rules written
out independently here from ``extract_features.py``.
"""
from __future__ import annotations

import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from transformers import BertTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from bert_bridge.errors import InvalidRequest, StartupError
from bert_exporter.options import packaged_model_dir
from bert_bridge.core.tokenization import Encoding, TokenizerSettings, WordPieceTokenizer, pad

ENGLISH = [
    "Hello, world! How are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    "don't stop-believing: it's 3.14159 (roughly) & 100% \"true\"",
    "unaffable tokenization of supercalifragilisticexpialidocious words",
    "First do it",
    "",
]
ACCENTED = ["Café naïve Ångström", "résumé São Paulo Zürich Łódź façade", "ÉCOLE ÉLÉMENTAIRE Ñandú"]
CHINESE = ["我爱北京天安门", "今天天气很好，我们去公园吧。"]
MIXED = ["BERT模型 works ok!", "使用BERT进行NLP任务 is fun 😀", "Tokyo東京 and Seoul서울 — both große Städte"]
ODD_WHITESPACE = [
    "  leading and trailing  ",
    "tabs\tand\nnewlines\r\nand  double  spaces",
    "nbsp\u00a0ideographic\u3000space\u2009thin",
    "zero\u200bwidth and soft\u00adhyphen",
    "nul\x00char, replacement\ufffdchar, bell\x07char, del\x7fchar",
    "vertical\x0btab\x0cform\x1cfeed\x85next",
    "line\u2028separator\u2029paragraph",
]
ALL_TEXT = ENGLISH + ACCENTED + CHINESE + MIXED + ODD_WHITESPACE


@pytest.fixture(scope="module")
def vocab_file() -> Path:
    return packaged_model_dir() / "vocab.txt"


@pytest.fixture(scope="module")
def vocab(oracles) -> dict[str, int]:
    return oracles[True][0].get_vocab()


@pytest.fixture(scope="module")
def oracles(vocab_file):
    """(Rust-backed, pure-Python) transformers tokenizers, per casing."""
    return {lower: (BertTokenizer(str(vocab_file), do_lower_case=lower),
                    BertTokenizerLegacy(str(vocab_file), do_lower_case=lower)) for lower in (True, False)}


def make(vocab_file, **settings) -> WordPieceTokenizer:
    return WordPieceTokenizer(TokenizerSettings(vocab_file=vocab_file, **settings))


def google_tokenize(oracles, lower: bool, text: str) -> list[str]:
    """Google's FullTokenizer.tokenize under Python's unicodedata: transformers' pure-Python copy, except that the
    copy NFC-normalizes first, which the original never did; where that matters (cased text that NFC changes) the
    Rust oracle, which does not normalize either, stands in."""
    rust, python = oracles[lower]
    return python.tokenize(text) if lower or unicodedata.normalize("NFC", text) == text else rust.tokenize(text)


def google_truncate_pair(a: list, b: list, budget: int) -> tuple[list, list]:
    """The original's _truncate_seq_pair, written here on its own: pop from the longer, from b on a tie."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


# ---------------------------------------------------------------------------------------------- strings vs oracles


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
@pytest.mark.parametrize("text", ALL_TEXT)
def test_single_sentence_matches_bert_tokenizer(vocab_file, oracles, lower, text):
    oracle = oracles[lower][0]
    [encoding] = make(vocab_file, do_lower_case=lower, max_seq_len=256).encode([text])
    expected = oracle(text)
    assert encoding.input_ids == expected["input_ids"]
    assert encoding.segment_ids == expected["token_type_ids"]
    assert encoding.input_mask == expected["attention_mask"]
    assert encoding.tokens == ["[CLS]", *oracle.tokenize(text), "[SEP]"]


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_batch_matches_single_sentences(vocab_file, oracles, lower):
    oracle = oracles[lower][0]
    encodings = make(vocab_file, do_lower_case=lower, max_seq_len=256).encode(ALL_TEXT)
    assert [e.input_ids for e in encodings] == [oracle(t)["input_ids"] for t in ALL_TEXT]


def test_accents_are_stripped_only_when_lower_casing(vocab_file):
    [uncased] = make(vocab_file).encode(["Café"])
    [cased] = make(vocab_file, do_lower_case=False).encode(["Café"])
    assert uncased.tokens == ["[CLS]", "cafe", "[SEP]"]
    assert "cafe" not in cased.tokens and "café" not in cased.tokens  # 'Café' kept as is: not in an uncased vocab


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
@pytest.mark.parametrize("text", [
    "ΟΔΟΣ ΚΑΙ ΣΟΦΙΑΣ",  # Python's str.lower() applies the final-sigma rule, per-character lower-casing does not
    "unassigned\u0378code point",  # category Cn: the original drops it as a control character
    "arabic\u061dend of text",  # punctuation since Unicode 14 (Python 3.11's unicodedata)
    "private\ue000use",
    "new emoji \U0001fae8 from Unicode 15",  # unassigned for Python 3.11: dropped
    "CJK compatibility \ufa6c\uf900 ideographs",  # NFD takes U+FA6C out of the BMP
    "CJK extension E \U0002b820\U0002b8ff",
    "combining\u0301 \u0301alone and emoji 😀👍🏽",
])
def test_unicode_details_match_googles_python_tokenizer(vocab_file, oracles, lower, text):
    [encoding] = make(vocab_file, do_lower_case=lower, max_seq_len=256).encode([text])
    assert encoding.tokens == ["[CLS]", *google_tokenize(oracles, lower, text), "[SEP]"]


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_every_bmp_character_and_an_astral_sample_match_googles_python_tokenizer(vocab_file, oracles, lower):
    """Each character between letters and alone: control, whitespace, punctuation, CJK, accents, case."""
    code_points = [cp for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF] + list(range(0x10000, 0x110000, 97))
    texts = [f"a{chr(cp)}b {chr(cp)}" for cp in code_points]
    encodings = make(vocab_file, do_lower_case=lower, max_seq_len=64).encode(texts)
    expected = [google_tokenize(oracles, lower, t) for t in texts]
    mismatches = [(hex(cp), e.tokens[1:-1], x)
                  for cp, e, x in zip(code_points, encodings, expected) if e.tokens[1:-1] != x]
    assert not mismatches[:20], f"{len(mismatches)} mismatches"


def test_special_token_text_is_split_like_any_text(vocab_file):
    """Google's FullTokenizer knows no special tokens in text (both transformers oracles keep them whole)."""
    [encoding] = make(vocab_file).encode(["a [SEP] b"])
    assert encoding.tokens == ["[CLS]", "a", "[", "sep", "]", "b", "[SEP]"]


def test_lone_surrogates_are_dropped_as_control_characters(vocab_file, oracles):
    text = "bad\ud800surrogate"  # json.loads makes these from '\\ud800'; Rust cannot even take them
    [encoding] = make(vocab_file).encode([text])
    assert encoding.tokens == ["[CLS]", *oracles[True][1].tokenize(text), "[SEP]"]


def test_words_longer_than_100_characters_are_unknown(vocab_file, oracles):
    oracle = oracles[True][0]
    text = f"{'a' * 100} {'b' * 101}"
    [encoding] = make(vocab_file, max_seq_len=512).encode([text])
    assert encoding.tokens == ["[CLS]", *oracle.tokenize(text), "[SEP]"]
    assert encoding.tokens[-2] == "[UNK]" and encoding.tokens[1] != "[UNK]"


# ------------------------------------------------------------------------------------------------------------ pairs


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
@pytest.mark.parametrize("first, second", [
    ("First do it", "then do it right"),
    ("Café naïve", "我爱北京天安门"),
    ("BERT模型 works ok!", "résumé, s'il vous plaît"),
])
def test_pair_matches_bert_tokenizer(vocab_file, oracles, lower, first, second):
    oracle = oracles[lower][0]
    [encoding] = make(vocab_file, do_lower_case=lower, max_seq_len=256).encode([f"{first} ||| {second}"])
    expected = oracle(first, second)
    assert encoding.input_ids == expected["input_ids"]
    assert encoding.segment_ids == expected["token_type_ids"]
    assert encoding.input_mask == expected["attention_mask"]
    n_a = len(oracle.tokenize(first))
    assert encoding.segment_ids == [0] * (n_a + 2) + [1] * (len(expected["input_ids"]) - n_a - 2)
    assert encoding.tokens == ["[CLS]", *oracle.tokenize(first), "[SEP]", *oracle.tokenize(second), "[SEP]"]


@pytest.mark.parametrize("text, first, second", [
    ("a ||| b ||| c", "a ||| b", "c"),  # greedy (.*): the last ' ||| ' splits
    ("  a ||| b  ", "a", "b"),  # the line is stripped first
    ("a|||b", "a|||b", None),  # spaces around '|||' are required
    ("a\nb ||| c", "a\nb ||| c", None),  # '.' does not match a newline: no pair
    ("a ||| \u200b", "a", None),  # a second part without tokens makes no pair (and is dropped)
])
def test_pair_splitting_follows_the_originals_regular_expression(vocab_file, oracles, text, first, second):
    oracle = oracles[True][0]
    [encoding] = make(vocab_file, max_seq_len=64).encode([text])
    expected = oracle(first) if second is None else oracle(first, second)
    assert encoding.input_ids == expected["input_ids"]
    assert encoding.segment_ids == expected["token_type_ids"]


# ------------------------------------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("max_seq_len", [4, 5, 10, 25])
def test_single_sentence_is_truncated_on_the_right(vocab_file, oracles, max_seq_len):
    oracle = oracles[True][0]
    text = "the quick brown fox jumps over the lazy dog " * 5
    [encoding] = make(vocab_file, max_seq_len=max_seq_len).encode([text])
    assert encoding.input_ids == oracle(text, truncation=True, max_length=max_seq_len)["input_ids"]
    assert encoding.tokens == ["[CLS]", *oracle.tokenize(text)[:max_seq_len - 2], "[SEP]"]


@pytest.mark.parametrize("len_a, len_b, max_seq_len", [
    (3, 30, 10), (30, 3, 10), (12, 20, 25), (20, 12, 25), (2, 2, 25), (40, 40, 25), (10, 12, 8), (12, 10, 8),
    (10, 10, 8), (11, 10, 9), (10, 11, 9), (7, 7, 4),
])
def test_pair_is_truncated_from_the_longer_side(vocab_file, oracles, len_a, len_b, max_seq_len):
    oracle = oracles[True][0]
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()
    first = " ".join(words[i % len(words)] for i in range(len_a))
    other = " ".join(words[-1 - i % len(words)] for i in range(len_b))
    tokens_a, tokens_b = google_truncate_pair(oracle.tokenize(first), oracle.tokenize(other), max_seq_len - 3)
    [encoding] = make(vocab_file, max_seq_len=max_seq_len).encode([f"{first} ||| {other}"])
    second = [*tokens_b, "[SEP]"] if tokens_b else []  # truncation may empty it: then no pair, no second [SEP]
    assert encoding.tokens == ["[CLS]", *tokens_a, "[SEP]", *second]
    assert encoding.segment_ids == [0] * (len(tokens_a) + 2) + [1] * len(second)
    # transformers' 'longest_first' agrees except when both sides end up cut to half of an odd budget: the
    # original then keeps the extra token in the first part, transformers in the longer (or second) one.
    both_halved = min(len(tokens_a), len(tokens_b)) < min(len(oracle.tokenize(first)), len(oracle.tokenize(other)))
    if not (both_halved and (max_seq_len - 3) % 2):
        assert encoding.input_ids == oracle(first, other, truncation="longest_first",
                                            max_length=max_seq_len)["input_ids"]


def test_pair_truncation_keeps_the_extra_token_in_the_first_part_on_a_tie(vocab_file):
    [encoding] = make(vocab_file, max_seq_len=8).encode(["a b c d e f ||| g h i j k l"])
    assert encoding.tokens == ["[CLS]", "a", "b", "c", "[SEP]", "g", "h", "[SEP]"]


def test_none_caps_at_max_position_embeddings(vocab_file, oracles):
    oracle = oracles[True][0]
    tokenizer = make(vocab_file, max_seq_len=None, max_position_embeddings=64)
    long = "word " * 100
    single, pair, short = tokenizer.encode([long, f"{long} ||| {long}", "short one"])
    assert single.tokens == ["[CLS]", *oracle.tokenize(long)[:62], "[SEP]"]
    assert len(pair.input_ids) == 64 and pair.segment_ids.count(1) == 31
    assert short.input_ids == oracle("short one")["input_ids"]


def test_batch_length_is_the_originals_dynamic_length(vocab_file):
    """convert_lst_to_features with max_seq_len None: longest content + 3 if any pair else + 2, capped."""
    tokenizer = make(vocab_file, max_seq_len=None, max_position_embeddings=64)
    singles = tokenizer.encode(["one two three four five", "one"])
    assert tokenizer.batch_length(singles) == 7
    with_pair = tokenizer.encode(["one two three four five", "one ||| two"])
    assert tokenizer.batch_length(with_pair) == 5 + 3
    assert tokenizer.batch_length(tokenizer.encode(["word " * 100])) == 64
    no_special = make(vocab_file, max_seq_len=None, no_special_token=True, max_position_embeddings=64)
    assert no_special.batch_length(no_special.encode([["one", "two", "three"], ["one"]])) == 3 + 2


# ------------------------------------------------------------------------------------------------- tokenized input


def test_tokenized_input_is_looked_up_not_wordpieced(vocab_file, vocab):
    """The original's mark_unk_tokens: exact vocabulary lookup, no lower-casing, no WordPiece."""
    tokens = ["hello", "world!", "Hello", "unaffable", "我", "##ing", "[MASK]"]
    [encoding] = make(vocab_file).encode([tokens])
    marked = [t if t in vocab else "[UNK]" for t in tokens]
    assert "[UNK]" in marked and marked != tokens
    assert encoding.tokens == ["[CLS]", *marked, "[SEP]"]
    assert encoding.input_ids == [vocab["[CLS]"], *(vocab[t] for t in marked), vocab["[SEP]"]]
    assert encoding.segment_ids == [0] * (len(tokens) + 2) and encoding.input_mask == [1] * (len(tokens) + 2)


def test_tokenized_pair_splits_at_the_first_separator_token(vocab_file, vocab):
    [encoding] = make(vocab_file).encode([["first", "do", "|||", "then", "|||", "right"]])
    unk_or_bar = "|||" if "|||" in vocab else "[UNK]"
    assert encoding.tokens == ["[CLS]", "first", "do", "[SEP]", "then", unk_or_bar, "right", "[SEP]"]
    assert encoding.segment_ids == [0, 0, 0, 0, 1, 1, 1, 1]


def test_tokenized_separator_at_the_end_makes_no_pair(vocab_file):
    [encoding] = make(vocab_file).encode([["alone", "|||"]])
    assert encoding.tokens == ["[CLS]", "alone", "[SEP]"]


def test_tokenized_pair_is_truncated_like_a_text_pair(vocab_file, vocab):
    a, b = [f"a{i}" for i in range(10)], [f"b{i}" for i in range(4)]
    [encoding] = make(vocab_file, max_seq_len=10).encode([[*a, "|||", *b]])
    tokens_a, tokens_b = google_truncate_pair(*([t if t in vocab else "[UNK]" for t in x] for x in (a, b)), 7)
    assert encoding.tokens == ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
    assert encoding.segment_ids.count(1) == len(tokens_b) + 1


def test_tokenized_input_is_truncated_on_the_right(vocab_file):
    tokens = ["one", "two", "three", "four", "five", "six"]
    [encoding] = make(vocab_file, max_seq_len=5).encode([tokens])
    assert encoding.tokens == ["[CLS]", "one", "two", "three", "[SEP]"]


# ---------------------------------------------------------------------------------- mask_cls_sep, no_special_token


def test_mask_cls_sep_masks_cls_and_every_sep(vocab_file):
    tokenizer = make(vocab_file, mask_cls_sep=True)
    single, pair = tokenizer.encode(["hello world", "hello ||| big world"])
    assert single.input_mask == [0, 1, 1, 0]
    assert pair.tokens == ["[CLS]", "hello", "[SEP]", "big", "world", "[SEP]"]
    assert pair.input_mask == [0, 1, 0, 1, 1, 0]
    [tokenized] = tokenizer.encode([["hello", "world"]])
    assert tokenized.input_mask == [0, 1, 1, 0]


def test_no_special_token_drops_cls_and_sep_of_tokenized_single_sentences(vocab_file, vocab):
    tokenizer = make(vocab_file, no_special_token=True, max_seq_len=4, mask_cls_sep=True)
    [single] = tokenizer.encode([["one", "two", "three", "four", "five"]])
    assert single.tokens == ["one", "two", "three", "four"]  # truncated to max_seq_len, not max_seq_len - 2
    assert single.input_ids == [vocab[t] for t in single.tokens]
    assert single.input_mask == [1, 1, 1, 1] and single.segment_ids == [0, 0, 0, 0]
    [pair] = make(vocab_file, no_special_token=True, max_seq_len=5).encode([["one", "|||", "two"]])
    assert pair.tokens == ["[CLS]", "one", "[SEP]", "two", "[SEP]"]  # pairs keep their special tokens


def test_a_pair_truncated_to_one_part_is_assembled_as_a_single_sentence(vocab_file):
    """The original decides 'pair or not' again after _truncate_seq_pair: an emptied second part adds no [SEP]."""
    [encoding] = make(vocab_file, max_seq_len=4).encode(["one ||| two"])
    assert encoding.tokens == ["[CLS]", "one", "[SEP]"]
    [tokenized] = make(vocab_file, max_seq_len=4, no_special_token=True).encode([["one", "|||", "two"]])
    assert tokenized.tokens == ["one"]


def test_no_special_token_leaves_text_input_alone(vocab_file):
    tokenizer = make(vocab_file, no_special_token=True, max_seq_len=5)
    [encoding] = tokenizer.encode(["one two three four five six"])
    assert encoding.tokens == ["[CLS]", "one", "two", "three", "[SEP]"]


# ---------------------------------------------------------------------------------------------------------- padding


def test_pad_zero_pads_to_int32_arrays(vocab_file):
    encodings = make(vocab_file, mask_cls_sep=True).encode(["hello world", "a ||| b c"])
    input_ids, input_mask, segment_ids = pad(encodings, 8)
    for array in (input_ids, input_mask, segment_ids):
        assert array.shape == (2, 8) and array.dtype == np.int32
    for row, e in enumerate(encodings):
        n = len(e.input_ids)
        assert input_ids[row, :n].tolist() == e.input_ids and not input_ids[row, n:].any()
        assert input_mask[row, :n].tolist() == e.input_mask and not input_mask[row, n:].any()
        assert segment_ids[row, :n].tolist() == e.segment_ids and not segment_ids[row, n:].any()


def test_pad_refuses_a_length_shorter_than_an_encoding():
    with pytest.raises(ValueError):
        pad([Encoding([101, 7, 102], [1, 1, 1], [0, 0, 0], ["[CLS]", "x", "[SEP]"])], 2)


# ------------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("texts, fragment", [
    ("a sentence", "not str"),
    ([], "empty list"),
    (None, "NoneType"),
    (["fine", 3], "sentence 1 is not a string but int"),
    (["fine", ["a", "list"]], "sentence 1 is not a string but a list"),
    ([["fine"], "text"], "sentence 0 is not a string but a list"),
    ([["fine"], []], "sentence 1 is an empty token list"),
    ([["fine", 7]], "sentence 0, token 1 is not a string but int"),
    ([None], "sentence 0 is not a string but NoneType"),
])
def test_bad_input_is_an_invalid_request_naming_the_problem(vocab_file, texts, fragment):
    with pytest.raises(InvalidRequest) as raised:
        make(vocab_file).encode(texts)
    assert fragment in raised.value.message


@pytest.mark.parametrize("text", ["", "   ", "\x00\u200b"])
def test_empty_sentences_still_give_cls_and_sep(vocab_file, text):
    [encoding] = make(vocab_file).encode([text])
    assert encoding.tokens == ["[CLS]", "[SEP]"] and encoding.input_ids == [101, 102]


@pytest.mark.parametrize("settings, fragment", [
    ({"max_seq_len": 3}, "max_seq_len"),
    ({"max_seq_len": 600}, "max_position_embeddings"),
    ({"max_position_embeddings": 2, "max_seq_len": None}, "max_position_embeddings"),
])
def test_bad_settings_are_startup_errors(vocab_file, settings, fragment):
    with pytest.raises(StartupError, match=fragment):
        TokenizerSettings(vocab_file=vocab_file, **settings)


def test_a_vocabulary_without_special_tokens_is_a_startup_error(tmp_path):
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("[PAD]\nhello\n", encoding="utf-8")
    with pytest.raises(StartupError, match=r"\[CLS\]"):
        make(vocab_file)


def test_vocabulary_lines_are_stripped_like_googles_load_vocab(tmp_path):
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello \r\nworld\n", encoding="utf-8")
    [encoding] = make(vocab_file).encode(["hello world"])
    assert encoding.input_ids == [2, 4, 5, 3]


# ------------------------------------------------------------------------------------------------------------ speed


def test_256_short_sentences_take_milliseconds(vocab_file):
    tokenizer = make(vocab_file)
    texts = [f"sentence number {i}: the quick brown fox jumps over the lazy dog, café 北京 😀" for i in range(256)]
    tokenizer.encode(texts)
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        tokenizer.encode(texts)
        timings.append(time.perf_counter() - start)
    # A few ms on an idle core; the bound leaves room for a busy shared machine while catching a slow path.
    assert sorted(timings)[2] < 0.05, timings


def test_long_unknown_words_stay_fast(vocab_file):
    tokenizer = make(vocab_file, max_seq_len=512)
    # Distinct 100-character words WordPiece cannot cover: the worst case for greedy longest-match-first.
    texts = [" ".join("".join(chr(97 + (i * 7 + j * 13 + k) % 26) for k in range(100)) for j in range(50))
             for i in range(64)]
    start = time.perf_counter()
    tokenizer.encode(texts)
    assert time.perf_counter() - start < 1.0



def test_token_ids_are_the_content_of_a_sequence(vocab_file, vocab):
    """The OpenAI API's token input: ids wrapped in [CLS]/[SEP] and truncated like text, or bare with
    -no_special_token; ids outside the vocabulary are refused."""
    text = "the quick brown fox jumps over the lazy dog"
    tokenizer = make(vocab_file, max_seq_len=8)
    from_text = tokenizer.encode([text])[0]
    content = [vocab[w] for w in text.split()]
    from_ids = tokenizer.encode_token_ids([content])[0]
    assert (from_ids.input_ids, from_ids.input_mask, from_ids.tokens) == (
        from_text.input_ids, from_text.input_mask, from_text.tokens)
    assert len(from_ids.input_ids) == 8 and from_ids.input_ids[0] == vocab["[CLS]"]
    masked = make(vocab_file, max_seq_len=8, mask_cls_sep=True).encode_token_ids([content])[0]
    assert masked.input_mask == [0, 1, 1, 1, 1, 1, 1, 0]
    bare = make(vocab_file, max_seq_len=8, no_special_token=True).encode_token_ids([content])[0]
    assert bare.input_ids == content[:8] and bare.num_special_tokens == 0
    for bad in ([[len(vocab) + 5]], [[-1]], [[1, "2"]], [[True]], [[]], [], "ids"):
        with pytest.raises(InvalidRequest):
            tokenizer.encode_token_ids(bad)


# --- explicit pairs (the modern routes: a rerank's query and document, /predict's pairs) ----------------------------

@pytest.mark.parametrize("lengths", [(3, 4), (9, 9), (10, 9), (9, 10), (2, 30), (30, 2), (30, 30), (40, 1)])
def test_explicit_pairs_are_cut_longest_first_as_transformers_cuts_them(vocab_file, oracles, lengths):
    """Models with heads are served with their own semantics: transformers' (and sentence-transformers') pair
    truncation, which differs from the original's on ties and near them."""
    tokenizer = WordPieceTokenizer(TokenizerSettings(vocab_file=vocab_file, max_seq_len=20,
                                                     pair_truncation="longest_first"))
    first, second = " ".join(["cat"] * lengths[0]), " ".join(["dogs"] * lengths[1])
    [encoding] = tokenizer.encode_pairs([(first, second)])
    expected = oracles[True][0](first, second, truncation=True, max_length=20)
    assert (encoding.input_ids, encoding.segment_ids) == (expected["input_ids"], expected["token_type_ids"])
    assert encoding.truncated == (sum(lengths) > 17)
    [as_text] = tokenizer.encode([f"{first} ||| {second}"])  # ZeroMQ's 'a ||| b' is cut the same way
    assert as_text.input_ids == encoding.input_ids


def test_explicit_pairs_are_taken_as_they_are(vocab_file, oracles):
    tokenizer = WordPieceTokenizer(TokenizerSettings(vocab_file=vocab_file, max_seq_len=64))
    rust = oracles[True][0]
    texts = [("the query ||| with bars", None), ("a query", "a document ||| with bars"), ("  spaced  ", None)]
    encodings = tokenizer.encode_pairs(texts)
    assert [e.input_ids for e in encodings] == [rust(a, b)["input_ids"] for a, b in texts]
    assert encodings[1].segment_ids == rust(*texts[1])["token_type_ids"]


@pytest.mark.parametrize("pairs, fragment", [
    ([], "expected at least one input"),
    ("text", "expected at least one input"),
    ([("a", "b"), ["a", "b"]], "input 1 is not a text nor a pair of texts"),
    ([("a", 3)], "input 0 is not a text nor a pair of texts"),
    ([("a", "")], "input 0 has an empty text"),
    ([("", None)], "input 0 has an empty text"),
])
def test_bad_pairs_are_an_invalid_request_naming_the_problem(vocab_file, pairs, fragment):
    tokenizer = WordPieceTokenizer(TokenizerSettings(vocab_file=vocab_file))
    with pytest.raises(InvalidRequest, match=fragment):
        tokenizer.encode_pairs(pairs)
