"""Each family's graph as bert-export writes it (exporter/families/roberta.py, distilbert.py, mpnet.py over the shared
encoder), in process, against the family's own transformers class -- RobertaModel, XLMRobertaModel, CamembertModel,
DistilBertModel and MPNetModel with random weights -- fed what the family's own trained tokenizer makes of real text
(tests/family_models.py; tests/exporter/test_export_families.py covers the options on random ids).

Both forms of the writer (fused for the CPU targets, standard operators for TensorRT) on one padded batch per family:
multilingual sentences and pairs whose second part carries segment id 1 (which these families ignore), a row at the
model's full 64 tokens, padding with zeros as the bridge pads (transformers gets the family's pad id, from which it
numbers its positions). Then the one-line refusal past the family's tokens, task models' prefixed weights,
sentence-transformers folders with AUTO, and int8 rows against transformers' fp32.
"""
from __future__ import annotations

import numpy as np
import pytest
from export_oracle import Reference, assert_close, original_pooling
from family_models import CORPUS, HELD_OUT, POSITIONS

from bert_exporter.build import build_onnx
from bert_exporter.encoder import Form
from bert_exporter.encoder_config import read_config
from bert_exporter.errors import OptionError
from bert_exporter.export import ExportOptions, export_model
from bert_exporter.families import family_for
from bert_exporter.manifest import ExportManifest

pytestmark = pytest.mark.slow

TRANSFORMERS_CLASS = {"roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel", "camembert": "CamembertModel",
                      "distilbert": "DistilBertModel", "mpnet": "MPNetModel"}
HAS_POOLER = {"roberta", "xlm-roberta", "camembert", "mpnet"}
TOKENS = POSITIONS - 2  # what every tiny model takes (RoBERTa-style tables number them from 2; DistilBERT's from 0)
LONG = " ".join(CORPUS)  # past every family's 64 tokens
FIRSTS = [HELD_OUT[0], HELD_OUT[1], HELD_OUT[6], "ok", HELD_OUT[12], LONG]
SECONDS = [HELD_OUT[4], None, HELD_OUT[9], None, HELD_OUT[13], None]  # pairs: the second part gets segment id 1
CASES = {
    "REDUCE_MEAN": dict(pooling_strategy="REDUCE_MEAN", pooling_layer=[-2]),
    "REDUCE_MEAN_MAX": dict(pooling_strategy="REDUCE_MEAN_MAX", pooling_layer=[-1, -3]),
    "FIRST_TOKEN": dict(pooling_strategy="FIRST_TOKEN", pooling_layer=[0]),
    "LAST_TOKEN-normalize": dict(pooling_strategy="LAST_TOKEN", pooling_layer=[-1], normalize=True),
    "NONE": dict(pooling_strategy="NONE", pooling_layer=[-1], max_seq_len=None),
    "REDUCE_MAX-mask_cls_sep": dict(pooling_strategy="REDUCE_MAX", pooling_layer=[-2], mask_cls_sep=True),
    "CLS_POOLED": dict(pooling_strategy="CLS_POOLED"),
    "REDUCE_MEAN-fp16": dict(pooling_strategy="REDUCE_MEAN", pooling_layer=[-1], fp16=True),
}


class Oracle:
    """One family's batch: what the graph is fed, and transformers' outputs for it."""

    def __init__(self, folder, family: str):
        import torch
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        rows = [tokenizer(first, second, truncation=True, max_length=TOKENS)["input_ids"]
                for first, second in zip(FIRSTS, SECONDS)]
        width = max(map(len, rows))
        assert width == TOKENS, "a row at the model's full length"
        ids = np.zeros((len(rows), width), np.int32)  # the bridge pads with zeros
        mask = np.zeros_like(ids)
        for index, row in enumerate(rows):
            ids[index, :len(row)], mask[index, :len(row)] = row, 1
        separator = ids == tokenizer.sep_token_id
        segments = ((np.cumsum(separator, axis=1) - separator) >= 1) * mask  # after a pair's first separator
        assert segments.any()
        self.feeds = {"input_ids": ids, "input_mask": mask, "segment_ids": segments.astype(np.int32)}
        self.special = (ids == tokenizer.cls_token_id) | separator
        self.pad_id = tokenizer.pad_token_id
        self.model = transformers.AutoModel.from_pretrained(str(folder)).eval()
        assert type(self.model).__name__ == TRANSFORMERS_CLASS[family]
        self.torch = torch
        self._outputs = {}

    def outputs(self, mask: np.ndarray) -> Reference:
        """Hidden states and the pooler's output (no token types: these families take none)."""
        key = mask.tobytes()
        if key not in self._outputs:
            torch = self.torch
            ids = np.where(self.feeds["input_mask"] == 1, self.feeds["input_ids"], self.pad_id)
            with torch.no_grad():
                out = self.model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                                 attention_mask=torch.from_numpy(mask.astype(np.int64)), output_hidden_states=True)
            pooled = getattr(out, "pooler_output", None)
            self._outputs[key] = Reference(layers=[h.numpy() for h in out.hidden_states[1:]],
                                           pooled=None if pooled is None else pooled.numpy())
        return self._outputs[key]

    def expected(self, options: ExportOptions, mask: np.ndarray) -> np.ndarray:
        pooled = original_pooling(self.outputs(mask), mask, options.pooling_strategy.name, list(options.pooling_layer))
        if options.normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled


@pytest.fixture(scope="module")
def oracles(family_folders):
    cache = {}

    def oracle(family: str) -> Oracle:
        if family not in cache:
            cache[family] = Oracle(family_folders.model(family), family)
        return cache[family]

    return oracle


def run(model, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["encodes"], feeds)[0].astype(np.float32)


def test_both_forms_equal_the_familys_transformers_class(family_folders, oracles, family, tmp_path):
    folder = family_folders.model(family)
    config = read_config(folder / "config.json")
    weights, _ = family_for(family).read_weights(folder, config=config, ckpt_name="unused")
    oracle = oracles(family)
    for name, case in CASES.items():
        if name == "CLS_POOLED" and family not in HAS_POOLER:
            continue
        options = ExportOptions(model_dir=folder, output=tmp_path, **{"max_seq_len": 64, **case})
        feeds = dict(oracle.feeds)
        if options.mask_cls_sep:  # what the bridge sends: no attention to, nor pooling of, the special tokens
            feeds["input_mask"] = np.where(oracle.special, 0, feeds["input_mask"]).astype(np.int32)
        truth = oracle.expected(options, feeds["input_mask"])
        tolerance = np.abs(truth).max() * 2e-3 if options.fp16 else 1e-4
        fused = build_onnx(config, weights, options, form=Form.FUSED)
        standard = build_onnx(config, weights, options, form=Form.STANDARD)
        for form, model in (("fused", fused), ("standard", standard)):
            vectors = run(model, feeds)
            try:
                assert_close(vectors, truth, tolerance)
                # segment ids are ignored: all zeros (what the bridge sends these families) give the same vectors
                assert_close(run(model, {**feeds, "segment_ids": np.zeros_like(feeds["segment_ids"])}), vectors, 0.0)
            except AssertionError as e:
                raise AssertionError(f"{family} {name}, {form} form: {e}") from None
    int8 = build_onnx(config, weights, ExportOptions(model_dir=folder, output=tmp_path), form=Form.INT8)
    assert_close(run(int8, feeds), run(int8, {**feeds, "segment_ids": np.zeros_like(feeds["segment_ids"])}), 0.0)
    # What TensorRT needs of the standard form: ai.onnx operators only, and every input read (it drops unread ones).
    assert {node.domain for node in standard.graph.node} == {""}
    assert {"input_ids", "input_mask", "segment_ids"} <= {name for node in standard.graph.node for name in node.input}


def test_max_seq_len_past_the_familys_tokens_is_refused_in_one_line(family_folders, tmp_path):
    for family, expected in (("xlm-roberta", "-max_seq_len 65 exceeds the 64 tokens this xlm-roberta takes "
                                             "(max_position_embeddings 66, the first token at row 2)"),
                             ("mpnet", "-max_seq_len 65 exceeds the 64 tokens this mpnet takes"),
                             ("distilbert", "-max_seq_len 65 exceeds the model's max_position_embeddings 64")):
        options = ExportOptions(model_dir=family_folders.model(family), output=tmp_path / "repository",
                                max_seq_len=65)
        with pytest.raises(OptionError) as refused:
            export_model(options)
        assert expected in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "repository").exists()


@pytest.mark.parametrize(("family", "task_class"), [("xlm-roberta", "XLMRobertaForSequenceClassification"),
                                                    ("distilbert", "DistilBertForMaskedLM"),
                                                    ("mpnet", "MPNetForMaskedLM")])
def test_task_models_are_read_under_their_prefix(family_folders, tmp_path, family, task_class):
    """A task model (roberta., distilbert., mpnet. before every encoder weight, its head beside) reads as its base
    model; without the base model's pooler, CLS_POOLED is refused."""
    import torch
    import transformers

    base_folder = family_folders.model(family)
    base = transformers.AutoModel.from_pretrained(str(base_folder))
    task = getattr(transformers, task_class)(base.config)
    prefix = task.base_model_prefix
    missing, _ = getattr(task, prefix).load_state_dict(base.state_dict(), strict=False)
    assert not missing
    task.save_pretrained(tmp_path / "task")
    from safetensors.numpy import load_file

    saved = load_file(str(tmp_path / "task" / "model.safetensors"))
    assert any(name.startswith(f"{prefix}.") for name in saved) and any(not n.startswith(prefix) for n in saved)

    config = read_config(base_folder / "config.json")
    family_module = family_for(family)
    expected, _ = family_module.read_weights(base_folder, config=config, ckpt_name="unused")
    read, _ = family_module.read_weights(tmp_path / "task", config=config, ckpt_name="unused")
    expected = {name: value for name, value in expected.items() if not name.startswith("pooler/")}
    assert sorted(read) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(read[name], value, err_msg=name)
    # the graph built from the task folder's weights, against the task model's encoder
    options = ExportOptions(model_dir=tmp_path / "task", output=tmp_path, pooling_layer=[-1], max_seq_len=None)
    ids = np.array([[0, 5, 9, 17, 2, 0]], np.int32)
    mask = np.array([[1, 1, 1, 1, 1, 0]], np.int32)
    feeds = {"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros_like(ids)}
    with torch.no_grad():
        hidden = getattr(task.eval(), prefix)(input_ids=torch.from_numpy(ids.astype(np.int64)),
                                              attention_mask=torch.from_numpy(mask.astype(np.int64)))
    truth = original_pooling(Reference(layers=[hidden.last_hidden_state.numpy()], pooled=None), mask, "REDUCE_MEAN",
                             [-1])
    assert_close(run(build_onnx(config, read, options, form=Form.FUSED), feeds), truth)
    if family in HAS_POOLER:
        with pytest.raises(OptionError, match="CLS_POOLED needs the pooler weights"):
            build_onnx(config, read, ExportOptions(model_dir=tmp_path, output=tmp_path, pooling_strategy="CLS_POOLED"),
                       form=Form.FUSED)


def test_sentence_transformers_folders_with_auto(family_folders, family, tmp_path):
    """bert-export -pooling_strategy AUTO on the family's sentence-transformers folder (Transformer -> Pooling ->
    Normalize): the model.onnx gives what SentenceTransformer.encode gives, fed the same tokens."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer

    from bert_exporter.cli import main as bert_export

    folder = family_folders.sentence_transformers(family)
    status = bert_export(["-model_dir", str(folder), "-pooling_strategy", "AUTO", "-target", "onnx",
                          "-output", str(tmp_path), "-name", "auto"])
    assert status == 0
    model = SentenceTransformer(str(folder), device="cpu")
    sentences = [*HELD_OUT[:6], LONG]
    expected = model.encode(sentences, convert_to_numpy=True)
    features = model.tokenize(sentences)
    mask = features["attention_mask"].numpy().astype(np.int32)
    feeds = {"input_ids": features["input_ids"].numpy().astype(np.int32) * mask, "input_mask": mask,
             "segment_ids": np.zeros_like(mask)}
    session = ort.InferenceSession(str(tmp_path / "auto" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    vectors = session.run(["encodes"], feeds)[0]
    assert_close(vectors, expected, 1e-5)
    assert ExportManifest.load(tmp_path / "auto").max_seq_len == model.max_seq_length


@pytest.mark.parametrize("family", ["xlm-roberta", "mpnet"])
def test_int8_keeps_every_check_sentence_against_transformers(family_folders, oracles, family, tmp_path):
    """-quantize int8 (the writer's int8 form) on these families: every sentence of the export's own multilingual
    check set (exporter/quantize.py), and its one-word sentences padded beside long ones, tokenized with the export's
    tokenizer.json, keeps a cosine of at least 0.99 to transformers' fp32 vector (held-out sentences, and the export's
    refusal when it does not: tests/families/test_family_quantize.py)."""
    import onnx
    from export_oracle import run_onnx

    from bert_exporter.quantize import check_batches, tokenizer_json_encoder

    options = ExportOptions(model_dir=family_folders.model(family), output=tmp_path, name=family, target="onnx",
                            quantize="int8", max_seq_len=TOKENS)
    folder = export_model(options)
    manifest = ExportManifest.load(folder)
    assert manifest.quantize == "int8" and manifest.extra["quantize_worst_cosine"] >= 0.99
    model = onnx.load(str(folder / "1" / "model.onnx"))
    assert any(node.op_type == "DynamicQuantizeMatMul" for node in model.graph.node)  # int8 for real
    oracle = oracles(family)
    for feeds in check_batches(tokenizer_json_encoder(folder / manifest.tokenizer_file), TOKENS):
        quantized = run_onnx(folder / "1" / "model.onnx", feeds)
        ids = np.where(feeds["input_mask"] == 1, feeds["input_ids"], oracle.pad_id)
        with oracle.torch.no_grad():
            out = oracle.model(input_ids=oracle.torch.from_numpy(ids.astype(np.int64)),
                               attention_mask=oracle.torch.from_numpy(feeds["input_mask"].astype(np.int64)),
                               output_hidden_states=True)
        reference = original_pooling(Reference(layers=[h.numpy() for h in out.hidden_states[1:]], pooled=None),
                                     feeds["input_mask"], "REDUCE_MEAN", [-2])
        cosines = (quantized * reference).sum(1) / np.linalg.norm(quantized, axis=1) / np.linalg.norm(reference, axis=1)
        assert cosines.min() >= 0.99, cosines
