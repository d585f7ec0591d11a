"""-quantize int8 on the RoBERTa and MPNet families (issue 22, Done when 3): the XLM-R and MPNet test models keep
every held-out sentence's cosine to transformers' fp32 vectors at 0.99 or more, or the export's own check refuses
them, saying so, and forcing them shows the check was right."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from export_oracle import Reference, original_pooling
from family_models import HELD_OUT

from bert_exporter.errors import QuantizationError
from bert_exporter.export import ExportOptions, export_model

pytestmark = pytest.mark.slow

MIN_COSINE = 0.99
MAX_SEQ_LEN = 32


def held_out_vectors(model_folder, onnx_file) -> tuple[np.ndarray, np.ndarray]:
    """(int8 model, transformers fp32) REDUCE_MEAN over layer -2 of HELD_OUT, one padded batch as the bridge sends."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_folder))
    batch = tokenizer(HELD_OUT, truncation=True, max_length=MAX_SEQ_LEN, padding=True, return_tensors="np")
    mask = batch["attention_mask"].astype(np.int32)
    feeds = {"input_ids": batch["input_ids"].astype(np.int32), "input_mask": mask, "segment_ids": np.zeros_like(mask)}
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    quantized = session.run(["encodes"], feeds)[0]
    model = AutoModel.from_pretrained(str(model_folder)).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(batch["input_ids"]), attention_mask=torch.from_numpy(mask.astype(np.int64)),
                    output_hidden_states=True)
    reference = original_pooling(Reference(layers=[h.numpy() for h in out.hidden_states[1:]], pooled=None), mask,
                                 "REDUCE_MEAN", [-2])
    return quantized, reference


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("family", ["xlm-roberta", "mpnet"])
def test_int8_keeps_every_held_out_row_or_is_refused_by_its_check(family_folders, tmp_path, family):
    options = ExportOptions(model_dir=family_folders.model(family), output=tmp_path, name=family, target="onnx",
                            quantize="int8", max_seq_len=MAX_SEQ_LEN, quantize_min_cosine=MIN_COSINE)
    try:
        folder = export_model(options)
    except QuantizationError as refused:
        assert "-quantize int8 loses too much accuracy" in str(refused) and "-force_quantize" in str(refused)
        folder = export_model(dataclasses.replace(options, force_quantize=True))
        quantized, reference = held_out_vectors(family_folders.model(family), folder / "1" / "model.onnx")
        assert cosines(quantized, reference).min() < MIN_COSINE  # the check refused a model that does lose accuracy
        return
    quantized, reference = held_out_vectors(family_folders.model(family), folder / "1" / "model.onnx")
    worst = cosines(quantized, reference)
    assert worst.min() >= MIN_COSINE, worst
