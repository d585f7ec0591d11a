"""The exporter's ModernBERT, NomicBert and GTE graphs (exporter/rotary_encoder.py) against transformers, in process:
both forms (fused for onnxruntime, standard ops for TensorRT) on padded batches of up to 300 tokens, each family's
variants (biases, token types, rotary scaling, the hub's custom-code layouts), what is refused, and -quantize int8.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from export_oracle import Reference, original_pooling
from family_models import HELD_OUT
from tiny_models import perturbed

from bert_exporter.build import build_onnx
from bert_exporter.encoder import Form
from bert_exporter.encoder_config import read_config
from bert_exporter.errors import OptionError, SourceError
from bert_exporter.export import ExportOptions, export_model
from bert_exporter.families import family_for

LENGTHS = [300, 150, 17, 5]  # padded to 300: the mask matters in every attention shape
VOCAB = 200
COMMON = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
              max_position_embeddings=1024, pad_token_id=0)


def tiny_model(kind: str, folder, *, head: bool = False, seed: int = 0, **overrides):
    """A transformers model of the family (its sequence-classification model with ``head``), every parameter
    perturbed, saved to ``folder``; returns the base model, the oracle."""
    import torch
    import transformers

    if kind == "modernbert":
        config = transformers.ModernBertConfig(**{**COMMON, "local_attention": 16, "global_attn_every_n_layers": 2,
                                                  "bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1,
                                                  "sep_token_id": 2, **overrides})
        classes = (transformers.ModernBertModel, transformers.ModernBertForSequenceClassification)
    elif kind == "nomic_bert":
        config = transformers.NomicBertConfig(**{**COMMON, **overrides})
        classes = (transformers.NomicBertModel, transformers.NomicBertForSequenceClassification)
    else:
        config = transformers.GteConfig(**{**COMMON, **overrides})
        classes = (transformers.GteModel, transformers.GteForSequenceClassification)
    torch.manual_seed(seed)
    model = perturbed(classes[head](config).eval())
    model.save_pretrained(folder)
    return getattr(model, model.base_model_prefix) if head else model


def batch(token_types: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    width = max(LENGTHS)
    ids, mask, segments = (np.zeros((len(LENGTHS), width), np.int32) for _ in range(3))
    for row, length in enumerate(LENGTHS):
        ids[row, :length] = rng.integers(3, VOCAB, size=length)
        mask[row, :length] = 1
        if token_types:
            segments[row, length // 2:length] = 1
    return {"input_ids": ids, "input_mask": mask, "segment_ids": segments}


def transformers_reference(model, feeds: dict) -> Reference:
    import torch

    inputs = {"input_ids": torch.from_numpy(feeds["input_ids"].astype(np.int64)),
              "attention_mask": torch.from_numpy(feeds["input_mask"].astype(np.int64))}
    if model.config.model_type != "modernbert":
        inputs["token_type_ids"] = torch.from_numpy(feeds["segment_ids"].astype(np.int64))
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    pooled = out.pooler_output.numpy() if getattr(out, "pooler_output", None) is not None else None
    return Reference(layers=[h.numpy() for h in out.hidden_states[1:]], pooled=pooled)


def run(model, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["encodes"], feeds)[0].astype(np.float32)


def both_forms(folder, strategy: str, layers: list[int], feeds: dict, **options) -> tuple[np.ndarray, np.ndarray]:
    config = read_config(folder / "config.json")
    weights, _ = family_for(config.model_type).read_weights(folder, config=config, ckpt_name="unused")
    export = ExportOptions(model_dir=folder, output=folder, pooling_strategy=strategy, pooling_layer=layers,
                           max_seq_len=None, **options)
    return run(build_onnx(config, weights, export, form=Form.FUSED), feeds), \
        run(build_onnx(config, weights, export, form=Form.STANDARD), feeds)


def assert_equal_to_transformers(model, folder, *, token_types: bool, cases=(("NONE", [-1]), ("REDUCE_MEAN", [-2]))):
    feeds = batch(token_types)
    reference = transformers_reference(model, feeds)
    for strategy, layers in cases:
        expected = original_pooling(reference, feeds["input_mask"], strategy, layers)
        fused, standard = both_forms(folder, strategy, layers, feeds)
        np.testing.assert_allclose(fused, expected, rtol=0, atol=1e-4, err_msg=f"fused {strategy} {layers}")
        np.testing.assert_allclose(standard, expected, rtol=0, atol=1e-4, err_msg=f"standard {strategy} {layers}")


VARIANTS = {
    "modernbert": ("modernbert", {}, False),
    "modernbert-biases-tanh": ("modernbert", dict(attention_bias=True, mlp_bias=True, norm_bias=True,
                                                  hidden_activation="gelu_pytorch_tanh"), False),
    "nomic_bert-pairs": ("nomic_bert", {}, True),
    "nomic_bert-linear-rope": ("nomic_bert", dict(rope_parameters={"rope_type": "linear", "factor": 4.0,
                                                                   "rope_theta": 500.0}), True),
    "gte-no-types": ("gte", dict(type_vocab_size=0), False),
    "gte-two-types": ("gte", dict(type_vocab_size=2, hidden_act="silu"), True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_both_forms_equal_transformers(variant, tmp_path):
    kind, overrides, token_types = VARIANTS[variant]
    model = tiny_model(kind, tmp_path, **overrides)
    assert_equal_to_transformers(model, tmp_path, token_types=token_types)


def test_modernbert_local_layers_see_only_their_window(tmp_path):
    """The batch's longest row is far longer than the 17-token window, so a graph that ignored the window (or
    the global/local pattern) could not match: transformers itself answers otherwise without it."""
    import copy

    import transformers

    model = tiny_model("modernbert", tmp_path)
    feeds = batch(token_types=False)
    windowed = transformers_reference(model, feeds).layers[-1] * feeds["input_mask"][:, :, None]
    config = copy.deepcopy(model.config)
    config.local_attention = 4096
    unwindowed = transformers.ModernBertModel(config).eval()
    unwindowed.load_state_dict(model.state_dict())
    unwindowed = transformers_reference(unwindowed, feeds).layers[-1] * feeds["input_mask"][:, :, None]
    assert np.abs(unwindowed - windowed).max() > 0.05
    for form in both_forms(tmp_path, "NONE", [-1], feeds):
        np.testing.assert_allclose(form, windowed, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["nomic_bert", "gte"])
def test_cls_pooled_reads_the_classification_models_pooler(kind, tmp_path):
    model = tiny_model(kind, tmp_path, head=True)
    feeds = batch(token_types=model.config.type_vocab_size > 1)
    fused, standard = both_forms(tmp_path, "CLS_POOLED", [-1], feeds)
    expected = transformers_reference(model, feeds).pooled
    np.testing.assert_allclose(fused, expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(standard, expected, rtol=0, atol=1e-4)



# Each family's *ForSequenceClassification: ModernBERT's head (dense, activation, norm, classifier) over the first
# token or the mean of the tokens after the final norm, NomicBert's and GTE's pooler + classifier.
HEAD_VARIANTS = {
    "modernbert-cls": ("modernbert", dict(num_labels=1)),
    "modernbert-mean-biases": ("modernbert", dict(num_labels=3, classifier_pooling="mean", classifier_bias=True,
                                                  norm_bias=True, classifier_activation="silu")),
    "nomic_bert": ("nomic_bert", dict(num_labels=3)),
    "gte": ("gte", dict(num_labels=2)),
}


@pytest.mark.parametrize("variant", list(HEAD_VARIANTS))
def test_each_familys_classification_head_gives_transformers_logits(variant, tmp_path):
    import torch
    import transformers

    from bert_exporter.head_source import classification_head, head_weights

    kind, overrides = HEAD_VARIANTS[variant]
    tiny_model(kind, tmp_path, head=True, seed=5, **overrides)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    feeds = batch(token_types=model.config.type_vocab_size > 1 if kind != "modernbert" else False)
    inputs = {"input_ids": torch.from_numpy(feeds["input_ids"].astype(np.int64)),
              "attention_mask": torch.from_numpy(feeds["input_mask"].astype(np.int64))}
    if kind != "modernbert":
        inputs["token_type_ids"] = torch.from_numpy(feeds["segment_ids"].astype(np.int64))
    with torch.no_grad():
        expected = model(**inputs).logits.numpy()
    config = read_config(tmp_path / "config.json")
    head = classification_head(tmp_path, tmp_path)
    assert head["pooling"] == ("mean" if overrides.get("classifier_pooling") == "mean" else "first")
    weights, _ = family_for(config.model_type).read_weights(tmp_path, config=config, ckpt_name="unused")
    weights.update(head_weights(tmp_path, head, weights, config))
    options = ExportOptions(model_dir=tmp_path, output=tmp_path, pooling_layer=[-1], max_seq_len=None, head=head)
    for form in (Form.FUSED, Form.STANDARD):
        np.testing.assert_allclose(run(build_onnx(config, weights, options, form=form), feeds), expected, rtol=0,
                                   atol=1e-4, err_msg=f"{variant} {form}")
    with pytest.raises(OptionError, match="-quantize cannot go with the classification head"):
        ExportOptions(model_dir=tmp_path, output=tmp_path, head=head, quantize="int8")

def test_fp16_output_is_the_float32_vectors_rounded(tmp_path):
    model = tiny_model("gte", tmp_path)
    feeds = batch(token_types=False)
    expected = original_pooling(transformers_reference(model, feeds), feeds["input_mask"], "REDUCE_MEAN", [-1])
    for form in both_forms(tmp_path, "REDUCE_MEAN", [-1], feeds, fp16=True):
        assert np.array_equal(form, form.astype(np.float16).astype(np.float32))  # float16 values, widened by run()
        assert np.abs(form - expected).max() <= 2e-3 * np.abs(expected).max()


# --- the hub's custom-code layouts ---------------------------------------------------------------------------------

def rewrite_config(folder, drop: tuple[str, ...], add: dict) -> None:
    path = folder / "config.json"
    config = {k: v for k, v in json.loads(path.read_text()).items() if k not in drop}
    path.write_text(json.dumps({**config, **add}))


def test_gte_new_checkpoints_read_as_the_hub_writes_them(tmp_path):
    """model_type "new", prefix new., packed qkv_proj and up_gate_proj (up, then gate), attn_ln/mlp_ln: the names
    transformers' conversion mapping reads; rope_theta at the top as the custom code's config has it."""
    import torch
    from safetensors.torch import load_file, save_file

    model = tiny_model("gte", tmp_path, type_vocab_size=0, rope_parameters={"rope_type": "default",
                                                                            "rope_theta": 20000.0})
    state = load_file(str(tmp_path / "model.safetensors"))
    hub = {}
    for name, tensor in state.items():
        layer = name.split(".")[1] if name.startswith("layers.") else None
        if layer is None:
            hub[f"new.{name}"] = tensor
            continue
        prefix, rest = f"new.encoder.layer.{layer}.", name.split(".", 2)[2]
        if rest.startswith("self_attn.q_proj."):
            leaf = rest.rsplit(".", 1)[1]
            hub[f"{prefix}attention.qkv_proj.{leaf}"] = torch.cat(
                [state[f"layers.{layer}.self_attn.{p}_proj.{leaf}"] for p in "qkv"])
        elif rest.startswith("mlp.up_proj."):
            hub[f"{prefix}mlp.up_gate_proj.weight"] = torch.cat(
                [state[f"layers.{layer}.mlp.up_proj.weight"], state[f"layers.{layer}.mlp.gate_proj.weight"]])
        elif not rest.startswith(("self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj")):
            renamed = rest.replace("self_attn.o_proj", "attention.o_proj").replace(
                "post_attention_layernorm", "attn_ln").replace("post_mlp_layernorm", "mlp_ln")
            hub[prefix + renamed] = tensor
    save_file({k: v.contiguous() for k, v in hub.items()}, str(tmp_path / "model.safetensors"))
    rewrite_config(tmp_path, ("rope_parameters", "model_type"), {
        "model_type": "new", "rope_theta": 20000.0, "rope_scaling": None, "position_embedding_type": "rope",
        "layer_norm_type": "layer_norm", "pack_qkv": True, "logn_attention_scale": False})
    assert read_config(tmp_path / "config.json").model_type == "new"
    assert_equal_to_transformers(model, tmp_path, token_types=False)


def test_nomic_and_modernbert_configs_in_the_hubs_words(tmp_path):
    """NomicBert's n_embd/n_layer/rotary_emb_base/activation_function (its tensors are saved in the hub's layout by
    transformers already), ModernBERT's global_attn_every_n_layers and global/local_rope_theta."""
    nomic = tiny_model("nomic_bert", tmp_path / "nomic", rope_parameters={"rope_type": "default",
                                                                          "rope_theta": 700.0})
    rewrite_config(tmp_path / "nomic", ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                        "intermediate_size", "max_position_embeddings", "rope_parameters",
                                        "hidden_act", "layer_norm_eps"),
                   {"n_embd": 48, "n_layer": 3, "n_head": 4, "n_inner": 40, "n_positions": 1024,
                    "rotary_emb_base": 700, "activation_function": "swiglu", "layer_norm_epsilon": 1e-12,
                    "rotary_emb_fraction": 1.0, "qkv_proj_bias": False, "prenorm": False})
    assert_equal_to_transformers(nomic, tmp_path / "nomic", token_types=True, cases=(("NONE", [-1]),))

    modern = tiny_model("modernbert", tmp_path / "modern", layer_types=None, global_attn_every_n_layers=3,
                        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 90000.0},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 5000.0}})
    rewrite_config(tmp_path / "modern", ("layer_types", "rope_parameters"),
                   {"global_attn_every_n_layers": 3, "global_rope_theta": 90000.0, "local_rope_theta": 5000.0})
    assert_equal_to_transformers(modern, tmp_path / "modern", token_types=False, cases=(("NONE", [-1]),))


# --- what is refused -------------------------------------------------------------------------------------------------

REFUSED_CONFIGS = {
    "ntk rotary scaling": ("gte", {"model_type": "new", "rope_scaling": {"type": "ntk", "factor": 2.0}}, "ntk"),
    "yarn": ("modernbert", {"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 2.0},
                                                "sliding_attention": {"rope_type": "default"}}}, "yarn"),
    "partial rotary": ("gte", {"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}},
                       "partial_rotary_factor"),
    "prenorm nomic": ("nomic_bert", {"prenorm": True}, "prenorm"),
    "rms norms": ("gte", {"layer_norm_type": "rms_norm"}, "layer_norm_type"),
    "odd head size": ("nomic_bert", {"hidden_size": 36, "num_attention_heads": 4}, "even head size"),
}


@pytest.mark.parametrize("case", list(REFUSED_CONFIGS))
def test_what_the_families_cannot_express_is_refused_in_one_line(case, tmp_path):
    kind, settings, words = REFUSED_CONFIGS[case]
    data = {**COMMON, "model_type": kind, "num_hidden_layers": 2, **settings}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(SourceError) as refused:
        read_config(tmp_path / "config.json")
    message = str(refused.value)
    assert words in message and "\n" not in message


def test_no_position_embeddings_and_savedmodel_are_refused(tmp_path, rotary_folders):
    folder = rotary_folders.model("modernbert")
    with pytest.raises(OptionError, match="rotary positions"):
        export_model(ExportOptions(model_dir=folder, output=tmp_path, no_position_embeddings=True))
    with pytest.raises(OptionError, match="savedmodel exports BERT only"):
        export_model(ExportOptions(model_dir=folder, output=tmp_path, target="savedmodel"))
    assert not any(tmp_path.iterdir())


def test_each_form_holds_what_its_runtime_knows_and_no_full_score_matrix(rotary_folders, tmp_path):
    """The fused form's global attention is onnxruntime's MultiHeadAttention with no mask input (its flash kernel:
    no [B, heads, T, T] scores); local layers are blocked (their scores are 5-D: blocks x block x window); the
    standard form holds ai.onnx operators only, for TensorRT."""
    folder = rotary_folders.model("modernbert")
    config = read_config(folder / "config.json")
    weights, _ = family_for("modernbert").read_weights(folder, config=config, ckpt_name="unused")
    options = ExportOptions(model_dir=folder, output=tmp_path, pooling_layer=[-1])
    fused = build_onnx(config, weights, options, form=Form.FUSED)
    attention = [n for n in fused.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(attention) == sum(window == 0 for window in config.attention_windows) > 0
    assert all(len([i for i in n.input if i]) == 3 for n in attention)
    softmax_inputs = {n.input[0] for n in fused.graph.node if n.op_type == "Softmax"}
    assert len(softmax_inputs) == sum(window > 0 for window in config.attention_windows) > 0
    standard = build_onnx(config, weights, options, form=Form.STANDARD)
    assert {n.domain for n in standard.graph.node} == {""}


# --- -quantize int8 --------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("family", ["modernbert", "nomic_bert", "gte"])
def test_int8_keeps_every_held_out_row_within_cosine_0_99(family, rotary_folders, tmp_path):
    """The export's own check passed (or it would have refused), and on sentences it never saw, every row of the
    int8 model stays within cosine 0.99 of fp32's."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    folder = rotary_folders.model(family)
    int8 = export_model(ExportOptions(model_dir=folder, output=tmp_path, name="int8", quantize="int8",
                                      max_seq_len=128))
    fp32 = export_model(ExportOptions(model_dir=folder, output=tmp_path, name="fp32", max_seq_len=128))
    tokenizer = Tokenizer.from_file(str(fp32 / "tokenizer.json"))
    tokenizer.enable_padding()
    encoded = tokenizer.encode_batch(HELD_OUT)
    feeds = {"input_ids": np.array([e.ids for e in encoded], np.int32),
             "input_mask": np.array([e.attention_mask for e in encoded], np.int32)}
    feeds["segment_ids"] = np.zeros_like(feeds["input_ids"])
    vectors = [ort.InferenceSession(str(model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, feeds)[0] for model in (fp32, int8)]
    norms = np.linalg.norm(vectors[0], axis=1) * np.linalg.norm(vectors[1], axis=1)
    cosines = (vectors[0] * vectors[1]).sum(axis=1) / norms
    assert cosines.min() >= 0.99
    assert json.loads((int8 / "bert_export.json").read_text())["extra"]["quantize_worst_cosine"] >= 0.99
