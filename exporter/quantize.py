"""``-quantize int8``: the export's graph written again in its int8 form (encoder.py), checked against fp32.

Every encoder projection becomes an int8 matrix product with one scale per output channel, its input quantized per
call by onnxruntime (DynamicQuantizeMatMul, QAttention). What lost accuracy before (the onnxruntime dynamic
quantization of the whole graph: worst cosine 0.973 at -pooling_layer -1 on MiniLM, and a one-word sentence padded
beside long ones at 0.95-0.99 depending on its chunk) was the range of each call's activations: one range per tensor,
stretched ten-fold by the first and last token's outlier channels ([CLS], [SEP]) and by the padding rows. The int8
form keeps both out of the ranges (encoder.py); weights alone cost little (0.997 on the same sentences).

The int8 model replaces ``model.onnx``, so every runtime that loads the folder runs it unchanged. Before it does, both
models encode a built-in multilingual sentence set, and one-word sentences padded beside long ones; the worst cosine
between their vectors is logged and recorded in the manifest, and below ``min_cosine`` the export is refused unless
forced (docs/EXPORT.md).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import QuantizationError

log = logging.getLogger(__name__)

INT8 = "int8"
CHOICES = (INT8,)
DEFAULT_MIN_COSINE = 0.99
# Short and long, several scripts; the check runs them at the export's max_seq_len (or 128 for NONE).
CHECK_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "Der Zug nach Berlin hat heute leider zwanzig Minuten Verspätung.",
    "La réunion de demain est reportée à la semaine prochaine pour des raisons d'organisation.",
    "El pronóstico del tiempo anuncia lluvias intensas durante todo el fin de semana.",
    "Il museo resterà chiuso per lavori di restauro fino alla fine di marzo.",
    "Москва является крупнейшим городом России по численности населения.",
    "東京は日本の首都であり、世界でも有数の大都市です。",
    "北京的秋天天气晴朗，非常适合外出旅游。",
    "서울의 지하철은 깨끗하고 편리하며 요금도 저렴합니다.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "यह पुस्तक भारतीय इतिहास के बारे में बहुत रोचक जानकारी देती है।",
    "Ο καιρός σήμερα είναι ηλιόλουστος και ζεστός.",
    "Kedvenc ételem a gulyásleves friss kenyérrel.",
    "ok",
    "Protein folding is determined by the sequence of amino acids and the surrounding solvent, which together "
    "shape the energy landscape the chain explores before it settles into its native structure.",
    "Shares fell sharply on Tuesday after the company cut its revenue forecast for the third time this year.",
    "Please return the signed contract by Friday so that we can schedule the installation.",
    "She played the violin at the concert, and the audience asked for two encores.",
    "Quantization maps floating point weights to eight bit integers with a scale per output channel.",
)


# Short words beside the longest sentences above, padded in one call: the case a per-call range served worst.
ONE_WORD_SENTENCES = ("ok", "hi", "Berlin", "yes")

Encode = Callable[[list[str]], list[list[int]]]  # sentences -> token ids with the family's special tokens


def quantize_int8(onnx_file: Path, *, build_int8, encode: Encode, max_seq_len: int | None, min_cosine: float,
                  force: bool) -> float:
    """Replace ``onnx_file`` by the model ``build_int8()`` returns; returns its worst cosine to the fp32 model."""
    import onnx

    batches = check_batches(encode, max_seq_len or 128)
    with tempfile.TemporaryDirectory(dir=onnx_file.parent) as scratch:
        quantized = Path(scratch) / onnx_file.name
        onnx.save_model(build_int8(), str(quantized))
        worst = min(worst_cosine(run(onnx_file, feeds), run(quantized, feeds), feeds["input_mask"])
                    for feeds in batches)
        log.info("int8: worst cosine to fp32 over %d sentences and %d one-word ones padded beside long ones: %.4f",
                 len(CHECK_SENTENCES), len(ONE_WORD_SENTENCES), worst)
        if worst < min_cosine and not force:
            raise QuantizationError(f"-quantize int8 loses too much accuracy: worst cosine to fp32 {worst:.4f} < "
                                    f"{min_cosine} on the built-in sentence set; pass -force_quantize to keep it")
        quantized.replace(onnx_file)
        onnx_file.with_name(f"{onnx_file.name}.data").unlink(missing_ok=True)  # fp32 weights kept aside (big models)
    return worst


def check_batches(encode: Encode, max_seq_len: int) -> list[dict[str, np.ndarray]]:
    """The check set in one call, and the one-word sentences beside the longest check sentences in another."""
    longest = sorted(CHECK_SENTENCES, key=len)[-8:]
    return [padded(encode(list(CHECK_SENTENCES)), max_seq_len),
            padded(encode(list(ONE_WORD_SENTENCES) + longest), max_seq_len)]


def padded(ids: list[list[int]], max_seq_len: int) -> dict[str, np.ndarray]:
    """Truncated to max_seq_len (keeping the last token, the family's end token), zero-padded to the longest."""
    ids = [row if len(row) <= max_seq_len else row[:max_seq_len - 1] + row[-1:] for row in ids]
    width = max(len(row) for row in ids)
    input_ids = np.zeros((len(ids), width), np.int32)
    for index, row in enumerate(ids):
        input_ids[index, :len(row)] = row
    mask = (np.arange(width)[None, :] < np.array([len(row) for row in ids])[:, None]).astype(np.int32)
    return {"input_ids": input_ids, "input_mask": mask, "segment_ids": np.zeros_like(input_ids)}


def wordpiece_encoder(vocab_file: Path, do_lower_case: bool) -> Encode:
    """BERT's tokenization of the check sentences, [CLS] and [SEP] included."""
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(str(vocab_file), lowercase=do_lower_case)
    return lambda sentences: [encoding.ids for encoding in tokenizer.encode_batch(sentences)]


def tokenizer_json_encoder(tokenizer_file: Path) -> Encode:
    """A Hugging Face tokenizer.json's tokenization, with the special tokens its post-processor adds."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return lambda sentences: [encoding.ids for encoding in tokenizer.encode_batch(sentences)]


def run(onnx_file: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0].astype(np.float32)


def worst_cosine(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> float:
    """Per sentence vector; for token-level outputs [B, T, D], per real token vector."""
    if reference.ndim == 3:
        real = mask.astype(bool)
        reference, candidate = reference[real], candidate[real]
    dot = (reference * candidate).sum(axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    return float((dot / np.maximum(norms, 1e-12)).min())
