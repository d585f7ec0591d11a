"""The bridge's tokenization of every family beyond BERT, against the family's own transformers tokenizer.

The oracle is ``AutoTokenizer.from_pretrained(model folder)`` (XLMRobertaTokenizer, RobertaTokenizer, ...). The
bridge runs the tokenizer.json the export writes (exporter/tokenizer_files.py) inside the original's rules; where the
original's rules decide (pair truncation, tokenized input, -mask_cls_sep, -no_special_token) they are written out
here independently, in the family's template: ``cls a sep`` and ``cls a sep [sep] b sep``.
"""
from __future__ import annotations

import pytest
from family_models import CORPUS, FAMILIES, HELD_OUT

from bert_bridge.core.tokenization import SequenceTemplate, TokenizerSettings, WordPieceTokenizer
from bert_bridge.errors import InvalidRequest
from bert_exporter.errors import SourceError
from bert_exporter.tokenizer_files import read_tokenizer_facts, write_tokenizer

ODD = ["", "   ", "HELLO World, MiXeD CaSe", "a <mask> in the text", "emoji 🎉👍🏽 and ❤️",
       "tabs\tand\nnewlines", "Ελληνικά ΚΑΙ ΣΟΦΙΑ", "naïve café", "x"]
TEXTS = CORPUS[:8] + HELD_OUT + ODD


@pytest.fixture(scope="module")
def oracles(family_folders):
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(str(family_folders.model(name))) for name in FAMILIES}


@pytest.fixture(scope="module")
def make(family_folders, tmp_path_factory):
    """``make(family, **settings)``: the bridge's tokenizer as an export of that family sets it up."""
    folder = tmp_path_factory.mktemp("family-tokenizers")

    def make(name: str, **settings) -> WordPieceTokenizer:
        model_folder = family_folders.model(name)
        tokenizer_file = folder / f"{name}.json"
        if not tokenizer_file.is_file():
            write_tokenizer(model_folder, tokenizer_file, model_type=name, lowercase_first=False)
        facts = read_tokenizer_facts(model_folder, model_type=name)
        special = facts.special_tokens
        template = SequenceTemplate(cls=special["cls"], sep=special["sep"], unk=special["unk"],
                                    pair_separators=facts.pair_separators, token_types=False)
        settings.setdefault("max_seq_len", 256)
        return WordPieceTokenizer(TokenizerSettings(tokenizer_file=tokenizer_file, template=template, **settings))

    return make


def truncate_pair(a: list, b: list, budget: int) -> tuple[list, list]:
    """The original's _truncate_seq_pair, written here on its own: pop from the longer, from b on a tie."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


def content_ids(oracle, text: str) -> list[int]:
    return oracle(text, add_special_tokens=False)["input_ids"]


def test_the_tokenizer_files_name_the_familys_special_tokens_and_pair_template(family_folders, family):
    facts = read_tokenizer_facts(family_folders.model(family), model_type=family)
    assert facts.special_tokens == FAMILIES[family].special_tokens
    assert facts.pair_separators == FAMILIES[family].pair_separators
    assert facts.lowercases is (FAMILIES[family].tokenizer_kind == "wordpiece")


def test_sentences_match_the_familys_tokenizer(make, oracles, family):
    oracle = oracles[family]
    encodings = make(family).encode(TEXTS)
    for text, encoding in zip(TEXTS, encodings):
        expected = oracle(text.strip())["input_ids"]  # the original strips each line
        assert encoding.input_ids == expected, text
        assert encoding.tokens == oracle.convert_ids_to_tokens(expected)
        assert encoding.input_mask == [1] * len(expected)
        assert encoding.segment_ids == [0] * len(expected)  # no token types in these families


def test_the_held_out_set_meets_unknown_pieces(make, oracles, family):
    """Characters the tokenizer never saw: the family's unknown token, by id and in the tokens shown."""
    unk = FAMILIES[family].special_tokens["unk"]
    tokens = [t for e in make(family).encode(HELD_OUT) for t in e.tokens]
    if FAMILIES[family].tokenizer_kind == "bpe":
        assert unk not in tokens  # byte-level BPE spells every character in bytes
    else:
        assert unk in tokens


@pytest.mark.parametrize("first, second", [
    ("First do it", "then do it right"),
    ("Der Zug nach Berlin", "東京は日本の首都です。"),
    ("ΟΔΥΣΣΕΥΣ", "I ❤️ emoji 🎉"),
])
def test_pairs_use_the_familys_template(make, oracles, family, first, second):
    oracle = oracles[family]
    [encoding] = make(family).encode([f"{first} ||| {second}"])
    expected = oracle(first, second)["input_ids"]
    assert encoding.input_ids == expected
    special = FAMILIES[family].special_tokens
    separators = [special["sep"]] * FAMILIES[family].pair_separators
    assert encoding.tokens == [special["cls"], *oracle.convert_ids_to_tokens(content_ids(oracle, first)),
                               *separators, *oracle.convert_ids_to_tokens(content_ids(oracle, second)), special["sep"]]
    assert encoding.segment_ids == [0] * len(expected) and encoding.num_special_tokens == 2 + len(separators)


@pytest.mark.parametrize("max_seq_len", [4, 5, 16, 25])
def test_long_sentences_are_truncated_on_the_right_counting_the_special_tokens(make, oracles, family, max_seq_len):
    oracle = oracles[family]
    text = " ".join(HELD_OUT)
    [encoding] = make(family, max_seq_len=max_seq_len).encode([text])
    assert encoding.input_ids == oracle(text, truncation=True, max_length=max_seq_len)["input_ids"]
    assert len(encoding.input_ids) == max_seq_len


@pytest.mark.parametrize("len_a, len_b, max_seq_len", [
    (3, 30, 12), (30, 3, 12), (12, 20, 25), (20, 12, 25), (40, 40, 25), (10, 10, 9), (11, 10, 10), (7, 7, 5),
])
def test_pairs_are_truncated_from_the_longer_side(make, oracles, family, len_a, len_b, max_seq_len):
    oracle = oracles[family]
    words = " ".join(CORPUS).split()
    first, other = " ".join(words[:len_a]), " ".join(words[-len_b:])
    separators = FAMILIES[family].pair_separators
    ids_a, ids_b = truncate_pair(content_ids(oracle, first), content_ids(oracle, other), max_seq_len - 2 - separators)
    cls, sep = oracle.cls_token_id, oracle.sep_token_id
    expected = [cls, *ids_a, sep, *([sep] * (separators - 1) + ids_b + [sep] if ids_b else [])]
    [encoding] = make(family, max_seq_len=max_seq_len).encode([f"{first} ||| {other}"])
    assert encoding.input_ids == expected
    assert len(encoding.input_ids) <= max_seq_len


def test_tokenized_input_is_looked_up_in_the_models_vocabulary(make, oracles, family):
    oracle = oracles[family]
    known = oracle.convert_ids_to_tokens(content_ids(oracle, "Der Zug nach Berlin"))
    other = oracle.convert_ids_to_tokens(content_ids(oracle, "the lazy dog"))
    unknown = "certainly-not-a-vocabulary-entry"
    [single, pair] = make(family).encode([[*known, unknown], [*known, "|||", *other]])
    special = FAMILIES[family].special_tokens
    assert single.tokens == [special["cls"], *known, special["unk"], special["sep"]]
    assert single.input_ids == [oracle.cls_token_id, *oracle.convert_tokens_to_ids(known), oracle.unk_token_id,
                                oracle.sep_token_id]
    # The tokens of two texts, looked up, are those texts' ids in the family's pair template.
    assert pair.input_ids == oracle("Der Zug nach Berlin", "the lazy dog")["input_ids"]


def test_mask_cls_sep_masks_the_familys_own_special_tokens(make, family):
    separators = FAMILIES[family].pair_separators
    single, pair = make(family, mask_cls_sep=True).encode(["hello world", "hello ||| big world"])
    assert single.input_mask[0] == single.input_mask[-1] == 0 and set(single.input_mask[1:-1]) == {1}
    special = {FAMILIES[family].special_tokens["cls"], FAMILIES[family].special_tokens["sep"]}
    assert pair.input_mask == [0 if t in special else 1 for t in pair.tokens]
    assert pair.input_mask.count(0) == 2 + separators


def test_no_special_token_leaves_tokenized_input_bare(make, oracles, family):
    oracle = oracles[family]
    tokens = oracle.convert_ids_to_tokens(content_ids(oracle, "The quick brown fox jumps over the lazy dog."))
    [bare] = make(family, no_special_token=True, max_seq_len=6).encode([tokens])
    assert bare.tokens == tokens[:6] and bare.num_special_tokens == 0


def test_token_ids_are_the_content_of_a_sequence(make, oracles, family):
    oracle = oracles[family]
    tokenizer = make(family, max_seq_len=12)
    text = "La réunion de demain est reportée à la semaine prochaine."
    from_ids = tokenizer.encode_token_ids([content_ids(oracle, text)])[0]
    assert from_ids.input_ids == tokenizer.encode([text])[0].input_ids
    assert tokenizer.vocab_size == len(oracle)
    with pytest.raises(InvalidRequest, match="outside the model's vocabulary"):
        tokenizer.encode_token_ids([[len(oracle)]])


def test_dynamic_length_counts_a_pairs_special_tokens(make, family):
    tokenizer = make(family, max_seq_len=None, max_position_embeddings=64)
    singles = tokenizer.encode(["one two three", "one"])
    content = max(len(e.input_ids) for e in singles) - 2
    assert tokenizer.batch_length(singles) == content + 2
    with_pair = tokenizer.encode(["one two three", "one ||| two"])
    assert tokenizer.batch_length(with_pair) == content + 2 + FAMILIES[family].pair_separators


def test_explicit_texts_keep_their_spaces_and_bars_unless_stripped(make, oracles):
    """The modern routes' texts as they are (what transformers and sentence-transformers tokenize), and stripped as
    the original strips its lines where asked: RoBERTa's byte-level BPE makes tokens of the spaces."""
    oracle, tokenizer = oracles["roberta"], make("roberta")
    texts = ["  leading spaces", "trailing  ", "a ||| b"]
    as_is = tokenizer.encode_pairs([(text, None) for text in texts])
    assert [e.input_ids for e in as_is] == [oracle(text)["input_ids"] for text in texts]
    stripped = tokenizer.encode_pairs([(text, None) for text in texts], strip=True)
    assert all(len(a.input_ids) > len(s.input_ids) for a, s in zip(as_is[:2], stripped))  # the spaces are tokens
    assert [e.input_ids for e in stripped] == [oracle(text.strip())["input_ids"] for text in texts]
    assert [e.input_ids for e in stripped[:2]] == [e.input_ids for e in tokenizer.encode(texts[:2])]
    assert tokenizer.encode(texts[2:])[0].input_ids == oracle("a", "b")["input_ids"]  # the original's pair


def test_a_folder_without_tokenizer_json_is_refused_in_one_line(family_folders, tmp_path):
    source = family_folders.model("xlm-roberta")
    (tmp_path / "config.json").write_text((source / "config.json").read_text())
    with pytest.raises(SourceError, match="has no tokenizer.json") as refused:
        read_tokenizer_facts(tmp_path, model_type="xlm-roberta")
    assert "\n" not in str(refused.value)
