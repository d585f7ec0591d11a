"""The families beyond BERT (exporter/families/): RoBERTa, XLM-RoBERTa, CamemBERT, DistilBERT and MPNet exported from
Hugging Face folders equal their transformers class (random weights built here, output_hidden_states=True, pooled as
the options say) within 1e-4, in the fused and the standard (TensorRT) form; -fp16 within its tolerance; the pooler
where the checkpoint has one; int8 close to fp32; and what a family cannot do, or an architecture no family reads, is
refused in one line. The served path (tokenizers, the bridge, sentence-transformers folders) is tests/families/.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from export_oracle import assert_close, original_pooling, run_onnx
from tiny_models import perturbed

from bert_exporter.errors import OptionError, SourceError
from bert_exporter.export import ExportOptions, export_model
from bert_exporter.manifest import ExportManifest

VOCAB = 300
SIZES = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37)
TOKENS = 38  # the longest sequence of the tiny models below (their position tables hold 38 tokens)
BOS, PAD, EOS = 0, 1, 2  # RoBERTa's ids; DistilBERT's tiny vocabulary below uses the same


@dataclass
class Family:
    model_type: str
    model: object
    folder: Path
    pooler: bool

    def hidden_states(self, feeds: dict) -> tuple[list[np.ndarray], np.ndarray | None]:
        import torch

        with torch.no_grad():
            out = self.model(input_ids=torch.from_numpy(feeds["input_ids"].astype(np.int64)),
                             attention_mask=torch.from_numpy(feeds["input_mask"].astype(np.int64)),
                             output_hidden_states=True)
        pooled = out.pooler_output.numpy() if self.pooler else None
        return [h.numpy() for h in out.hidden_states[1:]], pooled


def transformers_model(model_type: str, **overrides):
    import transformers as t

    if model_type == "distilbert":
        config = t.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=3, n_heads=4, hidden_dim=37,
                                    max_position_embeddings=TOKENS, pad_token_id=PAD, **overrides)
        return t.DistilBertModel(config)
    classes = {"roberta": (t.RobertaConfig, t.RobertaModel), "xlm-roberta": (t.XLMRobertaConfig, t.XLMRobertaModel),
               "camembert": (t.CamembertConfig, t.CamembertModel), "mpnet": (t.MPNetConfig, t.MPNetModel)}
    config_class, model_class = classes[model_type]
    extra = {} if model_type == "mpnet" else {"type_vocab_size": 1}
    config = config_class(vocab_size=VOCAB, max_position_embeddings=TOKENS + PAD + 1, pad_token_id=PAD,
                          bos_token_id=BOS, eos_token_id=EOS, **SIZES, **extra, **overrides)
    return model_class(config)


def write_tokenizer(folder: Path) -> None:
    """A byte-level BPE with RoBERTa's special tokens (the export carries the source's tokenizer.json)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 10, trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", EOS), ("<s>", BOS))
    tokenizer.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="session")
def families(tmp_path_factory) -> dict[str, Family]:
    import torch

    built = {}
    for index, model_type in enumerate(("roberta", "xlm-roberta", "camembert", "distilbert", "mpnet")):
        torch.manual_seed(100 + index)
        model = perturbed(transformers_model(model_type).eval())
        folder = tmp_path_factory.mktemp(model_type)
        model.save_pretrained(folder)
        write_tokenizer(folder)
        built[model_type] = Family(model_type, model, folder, pooler=model_type != "distilbert")
    return built


@pytest.fixture(scope="session")
def export_family(families, tmp_path_factory):
    repository = tmp_path_factory.mktemp("families-repository")
    cache: dict = {}

    def export(model_type: str, **options) -> Path:
        key = (model_type, tuple(sorted((k, str(v)) for k, v in options.items())))
        if key not in cache:
            options.setdefault("target", "onnx")
            cache[key] = export_model(ExportOptions(model_dir=families[model_type].folder, output=repository,
                                                    name=f"f{len(cache)}", **options))
        return cache[key]

    return export


def batch(lengths: list[int], width: int, *, seed: int, holes: bool = False) -> dict:
    """<s> tokens </s> rows (no real token is the padding id), zero-padded as the bridge pads; ``holes`` zeroes the
    mask at <s> and </s> (-mask_cls_sep)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), width), np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(5, VOCAB, size=length)
        ids[row, 0], ids[row, length - 1] = BOS, EOS
    mask = (np.arange(width)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    if holes:
        mask[:, 0] = 0
        mask[np.arange(len(lengths)), np.array(lengths) - 1] = 0
    return {"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros_like(ids)}


def expected(family: Family, feeds: dict, strategy: str, layers: list[int]) -> np.ndarray:
    from export_oracle import Reference

    hidden, pooled = family.hidden_states(feeds)
    return original_pooling(Reference(layers=hidden, pooled=pooled), feeds["input_mask"], strategy, layers)


MODEL_TYPES = ["roberta", "xlm-roberta", "camembert", "distilbert", "mpnet"]
CASES = [
    dict(pooling_strategy="REDUCE_MEAN", pooling_layer=[-2]),
    dict(pooling_strategy="REDUCE_MEAN_MAX", pooling_layer=[-1, -2], max_seq_len=None),
    dict(pooling_strategy="FIRST_TOKEN", pooling_layer=[-1]),
    dict(pooling_strategy="NONE", pooling_layer=[-1], max_seq_len=None),
]


@pytest.mark.parametrize("holes", [False, True], ids=["mask", "mask_cls_sep"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case["pooling_strategy"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_export_equals_transformers(families, export_family, model_type, case, holes):
    folder = export_family(model_type, **case)
    feeds = batch([TOKENS, 9, 4], TOKENS, seed=len(case), holes=holes)
    actual = run_onnx(folder / "1" / "model.onnx", feeds)
    assert_close(actual, expected(families[model_type], feeds, case["pooling_strategy"], case["pooling_layer"]))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_standard_form_and_fp16(families, export_family, model_type):
    """The TensorRT form (--trt-accelerator writes it) equals transformers too; -fp16 within a float16 step."""
    feeds = batch([20, 11, 5], 20, seed=7)
    truth = expected(families[model_type], feeds, "REDUCE_MEAN", [-1])
    standard = export_family(model_type, pooling_layer=[-1], trt_accelerator=True)
    assert_close(run_onnx(standard / "1" / "model.onnx", feeds), truth)
    half = run_onnx(export_family(model_type, pooling_layer=[-1], fp16=True) / "1" / "model.onnx", feeds)
    assert half.dtype == np.float16
    assert_close(half, truth, tolerance=np.abs(truth).max() * 2e-3)


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta", "camembert", "mpnet"])
def test_cls_pooled_uses_the_checkpoints_pooler(families, export_family, model_type):
    feeds = batch([15, 6], 15, seed=3)
    actual = run_onnx(export_family(model_type, pooling_strategy="CLS_POOLED") / "1" / "model.onnx", feeds)
    assert_close(actual, expected(families[model_type], feeds, "CLS_POOLED", [-1]))


def test_distilbert_has_no_pooler(families, tmp_path):
    with pytest.raises(OptionError, match="CLS_POOLED needs the pooler"):
        export_model(ExportOptions(model_dir=families["distilbert"].folder, output=tmp_path,
                                   pooling_strategy="CLS_POOLED"))


def test_sinusoidal_distilbert(tmp_path):
    """sinusoidal_pos_embds: the fixed table, from the file or, when the file lacks it, from the config."""
    from safetensors.numpy import load_file, save_file

    model = transformers_model("distilbert", sinusoidal_pos_embds=True).eval()
    model.save_pretrained(tmp_path)
    write_tokenizer(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if "position_embeddings" not in k}, str(tmp_path / "model.safetensors"))
    folder = export_model(ExportOptions(model_dir=tmp_path, output=tmp_path / "out", target="onnx",
                                        pooling_layer=[-1]))
    feeds = batch([12, 5], 12, seed=1)
    family = Family("distilbert", model, tmp_path, pooler=False)
    table = model.embeddings.position_embeddings.weight.detach().numpy()
    assert abs(table[3, 0] - np.sin(3)) < 1e-6 and abs(table[3, 1] - np.cos(3)) < 1e-6  # the oracle's is sinusoidal
    assert_close(run_onnx(folder / "1" / "model.onnx", feeds), expected(family, feeds, "REDUCE_MEAN", [-1]))


@pytest.mark.parametrize("model_type", ["xlm-roberta", "mpnet"])
def test_int8_stays_close_to_fp32(families, export_family, model_type):
    fp32 = export_family(model_type, pooling_layer=[-1])
    int8 = export_family(model_type, pooling_layer=[-1], quantize="int8")
    manifest = ExportManifest.load(int8)
    assert manifest.quantize == "int8" and manifest.extra["quantize_worst_cosine"] >= 0.99
    feeds = batch([TOKENS, 9, 4, 3], TOKENS, seed=11)
    a, b = run_onnx(fp32 / "1" / "model.onnx", feeds), run_onnx(int8 / "1" / "model.onnx", feeds)
    assert ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() >= 0.99
    assert np.abs(a - b).max() > 1e-6


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_manifest_says_what_the_bridge_needs(families, export_family, model_type):
    folder = export_family(model_type, target="embedded")
    manifest = ExportManifest.load(folder)
    assert (manifest.model_type, manifest.token_types) == (model_type, False)
    assert manifest.max_position_embeddings == TOKENS  # the most tokens one sequence may have, not the table's rows
    assert (manifest.vocab_file, manifest.tokenizer_file) == (None, "tokenizer.json")
    # The source's own tokenizer: its vocabulary and special tokens, its pipeline as transformers 5 rebuilds it
    # (tests/families/test_family_tokenization.py checks the tokens against the family's transformers tokenizer).
    from tokenizers import Tokenizer

    exported, source = (Tokenizer.from_file(str(f / "tokenizer.json")) for f in (folder, families[model_type].folder))
    assert exported.get_vocab(with_added_tokens=True) == source.get_vocab(with_added_tokens=True)
    assert manifest.special_tokens["cls"] == "<s>" and manifest.pair_separators == 2
    assert not (folder / "vocab.txt").exists()


@pytest.mark.parametrize("model_type", ["xlm-roberta", "mpnet"])
def test_longer_than_the_position_table_is_refused(families, tmp_path, model_type):
    with pytest.raises(OptionError, match=f"-max_seq_len {TOKENS + 1} exceeds"):
        export_model(ExportOptions(model_dir=families[model_type].folder, output=tmp_path, max_seq_len=TOKENS + 1))


def test_savedmodel_is_bert_only(families, tmp_path):
    with pytest.raises(OptionError, match="-target savedmodel exports BERT only"):
        export_model(ExportOptions(model_dir=families["roberta"].folder, output=tmp_path, target="savedmodel"))
    assert not (tmp_path / "bert").exists()


def test_a_folder_without_tokenizer_json_is_refused(families, tmp_path):
    import shutil

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(families["mpnet"].folder, folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(SourceError, match="has no tokenizer.json"):
        export_model(ExportOptions(model_dir=folder, output=tmp_path / "out"))


@pytest.mark.parametrize("model_type", ["deberta-v2", "gpt2"])  # not ModernBERT & co: branch rotary
def test_other_architectures_are_refused_in_one_line(tmp_path, model_type):
    from test_export_cli import assert_one_line_error, bert_export

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": model_type, "hidden_size": 32}))
    result = bert_export("-model_dir", tmp_path / "model", "-output", tmp_path / "out")
    assert_one_line_error(result, f"model_type '{model_type}'", "supported: bert", "xlm-roberta", "mpnet")


def test_mpnet_buckets_every_distance_as_transformers_does():
    import torch
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    from bert_exporter.encoder import relative_position_buckets

    distances = np.arange(-1023, 1024)
    theirs = MPNetEncoder.relative_position_bucket(torch.from_numpy(distances)).numpy()
    assert (relative_position_buckets(distances, 32, 128) == theirs).all()
