"""``-quantize int8``: onnxruntime dynamic quantization of the exported ONNX, with an accuracy check built in.

Only the weight matrices of MatMul nodes are quantized, per output channel: per-tensor scales lost too much (worst
cosine 0.956 on MiniLM against 0.994), and quantizing the embedding Gather and the activation-by-activation MatMuls of
attention as well cost accuracy (0.9904 against 0.9934 on the check set) for no measurable speed. The quantized model replaces ``model.onnx``, so every runtime that loads the
folder runs it unchanged. Before it does, both models encode a built-in multilingual sentence set; the worst cosine
between their vectors is logged and recorded in the manifest, and below ``min_cosine`` the export is refused unless
forced (docs/EXPORT.md).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from .errors import QuantizationError
from .manifest import ExportManifest

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


def quantize_int8(onnx_file: Path, *, folder: Path, manifest: ExportManifest, max_seq_len: int | None,
                  min_cosine: float, force: bool) -> float:
    """Replace ``onnx_file`` by its int8 version; returns the worst cosine to the fp32 model on CHECK_SENTENCES,
    tokenized with the tokenizer files the export (``folder``) carries."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    feeds = check_inputs(folder, manifest, max_seq_len or 128)
    with tempfile.TemporaryDirectory(dir=onnx_file.parent) as scratch:
        quantized = Path(scratch) / onnx_file.name
        quantize_dynamic(str(onnx_file), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True,
                                        # onnx's shape inference knows no com.microsoft operator's output type
                                        "DefaultTensorType": TensorProto.FLOAT})
        worst = worst_cosine(run(onnx_file, feeds), run(quantized, feeds), feeds["input_mask"])
        log.info("int8: worst cosine to fp32 over %d sentences: %.4f", len(CHECK_SENTENCES), worst)
        if worst < min_cosine and not force:
            raise QuantizationError(f"-quantize int8 loses too much accuracy: worst cosine to fp32 {worst:.4f} < "
                                    f"{min_cosine} on the built-in sentence set; pass -force_quantize to keep it")
        quantized.replace(onnx_file)
    return worst


def check_inputs(folder: Path, manifest: ExportManifest, max_seq_len: int) -> dict[str, np.ndarray]:
    """CHECK_SENTENCES as model inputs: BERT's vocab.txt, or the family's own tokenizer.json (its post-processor
    adds the family's special tokens)."""
    from tokenizers import BertWordPieceTokenizer, Tokenizer

    if manifest.vocab_file:
        tokenizer = BertWordPieceTokenizer(str(folder / manifest.vocab_file), lowercase=manifest.do_lower_case)
    else:
        tokenizer = Tokenizer.from_file(str(folder / manifest.tokenizer_file))
    tokenizer.enable_truncation(max_seq_len)
    tokenizer.enable_padding()
    batch = tokenizer.encode_batch(list(CHECK_SENTENCES))
    return {"input_ids": np.array([e.ids for e in batch], np.int32),
            "input_mask": np.array([e.attention_mask for e in batch], np.int32),
            "segment_ids": np.array([e.type_ids for e in batch], np.int32)}


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
