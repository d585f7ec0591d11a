"""The registry alone (bridge/core/registry.py): which service a request naming a model, or none, gets; built on
ModelSpecs as model_source makes them, with stand-in backends (no Triton)."""
from __future__ import annotations

import dataclasses

import pytest

from bert_bridge.config import MODEL_FLAGS, ModelSpec, parse_args
from bert_bridge.core.registry import ModelRegistry
from bert_bridge.errors import BackendUnavailable, InvalidRequest, ModelNotFound
from bert_exporter.manifest import ExportManifest
from bert_exporter.options import packaged_model_dir


class Backend:
    def endpoint_states(self) -> list[dict]:
        return [{"state": "ready"}]

    def watch_endpoints_up(self, listener) -> None:
        listener(1)  # one Triton


def spec(name: str, *, auto: bool = False, task: str = "embed") -> ModelSpec:
    """The packaged model's settings; ``auto``: as a -pooling_strategy AUTO export served at its own length."""
    config = parse_args([])
    manifest = ExportManifest(
        target="embedded", pooling_strategy="REDUCE_MEAN", pooling_layer=(-1,) if auto else (-2,),
        max_seq_len=256 if auto else 25, do_lower_case=True, mask_cls_sep=False, output_dim=384,
        output_dtype="float32", max_batch_size=256, max_position_embeddings=512, hidden_size=384,
        num_hidden_layers=6, source="stand-in", normalize=auto,
        sentence_transformers={"pooling_mode": "mean"} if auto else None)
    flags = {flag: getattr(config, flag) for flag in MODEL_FLAGS}
    flags.update(max_seq_len=manifest.max_seq_len, pooling_layer=manifest.pooling_layer, normalize=auto)
    return ModelSpec(name=name, task=task, folder=packaged_model_dir(), manifest=manifest, triton_name=name, **flags)


def registry(*specs: ModelSpec, unserved: dict | None = None) -> ModelRegistry:
    config = dataclasses.replace(parse_args([]), models=specs)
    return ModelRegistry.build(config, {s.name: Backend() for s in specs}, unserved)


def test_with_one_model_any_name_is_that_model():
    one = registry(spec("bert"))
    assert one.lookup(None) is one.lookup("text-embedding-3-small") is one.lookup("bert", route="embeddings") is one.default


def test_with_several_models_names_route_and_each_route_has_its_default():
    models = registry(spec("minilm"), spec("st", auto=True), spec("other"))
    assert models.lookup(None).name == "minilm"  # ZeroMQ, /encode: the first
    assert models.lookup(None, route="embeddings").name == "st"  # /v1/embeddings: the first with its own semantics
    assert models.lookup("other").name == "other" and models.lookup("st").name == "st"
    with pytest.raises(ModelNotFound, match="'nope' does not exist here; this server serves 'minilm', 'st', 'other'"):
        models.lookup("nope")
    without_st = registry(spec("minilm"), spec("other"))
    assert without_st.lookup(None, route="embeddings").name == "minilm"


def test_a_model_that_was_not_served_says_why_and_counts_as_configured():
    models = registry(spec("good"), unserved={"broken": "tritonserver could not load it: bad onnx"})
    assert models.names == ["good", "broken"]
    with pytest.raises(BackendUnavailable, match="model 'broken' is not served: tritonserver could not load it"):
        models.lookup("broken")
    with pytest.raises(ModelNotFound):  # two configured: names are no longer free
        models.lookup("anything")
    assert models.card("broken") == {"id": "broken", "task": "embed", "ready": False,
                                     "error": "tritonserver could not load it: bad onnx"}


def test_a_route_serves_only_the_tasks_it_knows():
    models = registry(spec("minilm"), spec("reranker", task="rerank"))
    with pytest.raises(InvalidRequest, match="'reranker' is a rerank model; /encode serves embed models: 'minilm'"):
        models.lookup("reranker")
    assert models.lookup("reranker", route="rerank").name == "reranker"


def test_each_route_serves_its_tasks_and_by_default_the_first_model_that_fits():
    models = registry(spec("minilm"), spec("reranker", task="rerank"), spec("nli", task="classify"),
                      spec("splade", task="sparse"))
    assert models.lookup(None, route="zmq").name == "minilm"  # the 1.10 protocol: the default, whatever it does
    assert models.lookup(None, route="rerank").name == models.lookup(None, route="predict").name == "reranker"
    assert models.lookup("nli", route="predict").name == "nli"  # /predict: rerank and classify models
    assert models.lookup(None, route="embed_sparse").name == "splade"
    with pytest.raises(InvalidRequest, match=r"model 'nli' is a classify model; /rerank \(and /v1/rerank\) serves "
                                             r"rerank models: 'reranker'"):
        models.lookup("nli", route="rerank")
    with pytest.raises(InvalidRequest, match="model 'minilm' is an embed model; /predict serves rerank or classify "
                                             "models: 'reranker', 'nli'"):
        models.lookup("minilm", route="predict")
    assert models.card("reranker")["default_for"] == ["rerank", "predict"]
    assert models.card("minilm")["default_for"] == ["zmq", "encode", "embeddings"]


def test_a_route_no_model_serves_says_what_is_served():
    alone = registry(spec("reranker", task="rerank"))
    assert alone.lookup(None, route="zmq") is alone.lookup("any name", route="rerank") is alone.default
    with pytest.raises(InvalidRequest, match="no model here serves /encode \\(embed models\\); this server serves "
                                             "'reranker' \\(rerank\\)"):
        alone.lookup(None)
    with pytest.raises(InvalidRequest, match="model 'reranker' is a rerank model; /v1/embeddings serves embed models: "
                                             "none here"):
        alone.lookup("text-embedding-3-small", route="embeddings")


def test_every_service_shares_one_scheduler_and_one_admission():
    models = registry(spec("a"), spec("b", auto=True))
    a, b = list(models)
    assert a._scheduler is b._scheduler and a.admission is b.admission is models.admission
    assert models.card("b")["semantics"] == "sentence-transformers" and models.card("b")["default_for"] == [
        "embeddings"]
    assert models.card("a")["default_for"] == ["zmq", "encode"] and models.card("a")["ready"]
