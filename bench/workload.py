"""Benchmark sentences of chosen token lengths, built from the words of a text file (the original's -client_vocab_file).

Lengths are counted with the model's own vocabulary, [CLS] and [SEP] included, so "a sentence of 40 tokens" is what the
model sees before max_seq_len truncates it.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

FALLBACK_WORDS = ("the service encodes sentences into vectors with a model exported for triton and served over "
                  "zeromq so that clients written for the original keep working").split()


class SentenceMaker:
    def __init__(self, vocab_file: Path, client_vocab_file: Path | None, seed: int = 0):
        from tokenizers import BertWordPieceTokenizer

        tokenizer = BertWordPieceTokenizer(str(vocab_file), lowercase=True)
        words = _words(client_vocab_file) or FALLBACK_WORDS
        counts = tokenizer.encode_batch(words, add_special_tokens=False)
        self._tokenizer = tokenizer
        self._words = [(word, len(c.ids)) for word, c in zip(words, counts) if len(c.ids) > 0]
        self._rng = np.random.default_rng(seed)

    def sentence(self, tokens: int) -> str:
        """A sentence of about ``tokens`` tokens with [CLS] and [SEP] (never fewer; a word may overshoot by its pieces)."""
        words, count = [], 2
        while count < tokens:
            word, pieces = self._words[int(self._rng.integers(len(self._words)))]
            words.append(word)
            count += pieces
        return " ".join(words) or self._words[0][0]

    def tokenize(self, sentences: list[str]):
        """The served model's tokens of each sentence, [CLS] and [SEP] included."""
        return self._tokenizer.encode_batch(sentences)

    def sentences(self, count: int, tokens: int) -> list[str]:
        return [self.sentence(tokens) for _ in range(count)]

    def sentences_within(self, count: int, shortest: int, longest: int) -> list[str]:
        """Sentences of ``shortest`` to ``longest`` tokens (counted, [CLS] and [SEP] included): a max_seq_len of
        ``longest`` truncates none of them."""
        found = []
        while len(found) < count:
            sentence = self.sentence(int(self._rng.integers(shortest, longest + 1)))
            if len(self._tokenizer.encode(sentence).ids) <= longest:
                found.append(sentence)
        return found

    def mixed(self, count: int, shortest: int, longest: int) -> list[str]:
        """Lengths uniform over shortest..longest tokens, spread evenly (every length about equally often) in random
        order: a draw of 256 lengths from 5..128 has a mean of 66.5 +- 2.2, which alone moves the gain padding can
        bring by +- 3.5%; the even spread measures the distribution itself, not the luck of one draw."""
        lengths = np.rint(np.linspace(shortest, longest, count)).astype(int)
        return [self.sentence(int(n)) for n in self._rng.permutation(lengths)]


def _words(path: Path | None) -> tuple[str, ...]:
    if path is None or not Path(path).is_file():
        return ()
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return tuple(dict.fromkeys(w.lower() for w in re.findall(r"[A-Za-z]{2,}", text)))


# Held out from bert_exporter.quantize.CHECK_SENTENCES: the benchmark's int8 accuracy figure.
HELD_OUT_MULTILINGUAL = (
    "Our train was cancelled, so we took the night bus instead.",
    "The library extended its opening hours during the exam period.",
    "Can you recommend a good book about the history of mathematics?",
    "Die Kinder spielen im Garten, während die Eltern kochen.",
    "Morgen früh fahren wir mit dem Fahrrad an den See.",
    "Le boulanger ouvre sa boutique à six heures tous les matins.",
    "Je cherche un appartement près de la gare avec un balcon.",
    "La película que vimos anoche tenía una banda sonora preciosa.",
    "Necesitamos comprar leche, huevos y pan para el desayuno.",
    "Il treno per Roma parte dal binario sette alle nove.",
    "O mercado abre cedo e fecha depois do almoço.",
    "De fietsenwinkel op de hoek repareert ook elektrische fietsen.",
    "Vi ses på stationen klockan åtta i morgon.",
    "Погода в горах меняется очень быстро.",
    "Мы встретились с друзьями в небольшом кафе у реки.",
    "駅の近くに新しいパン屋ができました。",
    "图书馆周末也开放，欢迎大家来学习。",
    "내일은 비가 올 것 같으니 우산을 챙기세요.",
    "المكتبة مفتوحة كل يوم من الصباح حتى المساء.",
    "मुझे सुबह की सैर करना बहुत पसंद है।",
    "Bugün hava çok güzel, parka gidelim mi?",
    "Kawa w tej kawiarni jest naprawdę wyśmienita.",
    "Το λεωφορείο αργεί πάντα τις Δευτέρες.",
    "a short one",
)
