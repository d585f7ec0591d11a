"""Rerank, classify and sparse vectors served (issue 24, Done when 1-3).

One bridge serves every export of tests/head_models.py (``--model-repository``, its first model ``bert-reranker`` the
default) over HTTP and ZeroMQ; a second one serves the three-label classifier alone, for the 1.10 client. Oracles are
someone else's code: transformers' ``*ForSequenceClassification`` logits with torch's sigmoid or softmax (what
transformers' pipeline applies), ``CrossEncoder(folder).predict``, and the SPLADE definition computed on transformers'
``BertForMaskedLM`` (tests/head_models.py).
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np
import pytest
from head_models import NLI_LABELS, classifier_logits, splade_vectors

from harness import free_port


pytestmark = pytest.mark.slow

QUERY = "how do tides work?"
DOCUMENTS = ["The moon's gravity pulls on the oceans, and the water rises twice a day.",
             "Paris is the capital and the most populous city of France.",
             "Tides are the rise and fall of sea levels caused by the moon and the sun.",
             "ok",
             "A very long passage about the sea, the shore, the harbour and the boats that wait for the water to "
             "come back in, " * 4]  # past the model's 64 tokens: cut longest-first, as transformers cuts it
TEXTS = ["A man is sleeping on the sofa.", "Nobody is awake in the house.", "Café naïve résumé à Zürich"]
SPLADE_TEXTS = ["the cat sat on the mat", "splade expands a query with related terms", "a", DOCUMENTS[-1]]


def scores_of(logits: np.ndarray, activation: str) -> np.ndarray:
    import torch

    logits = torch.from_numpy(logits)
    return (torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=-1)).numpy()


def passages(count: int) -> list[str]:
    """``count`` documents of 3 to 60 words, deterministic."""
    words = ("tide moon ocean water gravity shore harbour boat wave sun earth pull rise fall twice day night sea "
             "level coast storm wind sand river current").split()
    rng = np.random.default_rng(24)
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 60)))) for _ in range(count)]


@pytest.fixture(scope="module")
def served(heads_served):
    return heads_served


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def call(url: str, method: str = "GET", *, json_body=None) -> Reply:
    data = None if json_body is None else json.dumps(json_body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def post(url: str, path: str, body: dict):
    reply = call(f"{url}{path}", "POST", json_body=body)
    return reply.status, reply.json()


def test_v1_models_says_each_models_task_labels_and_activation(served):
    _, url = served
    cards = {card["id"]: card for card in call(f"{url}/v1/models").json()["data"]}
    assert {name: (card["task"], card.get("labels"), card.get("activation")) for name, card in cards.items()} == {
        "bert-reranker": ("rerank", ["LABEL_0"], "sigmoid"),
        "nli": ("classify", list(NLI_LABELS.values()), "softmax"),
        "encoder": ("embed", None, None),
        "minilm-reranker": ("rerank", ["LABEL_0"], "sigmoid"),
        "modernbert-mean-reranker": ("rerank", ["LABEL_0"], "sigmoid"),
        "modernbert-nli": ("classify", list(NLI_LABELS.values()), "softmax"),
        "modernbert-reranker": ("rerank", ["LABEL_0"], "sigmoid"),
        "splade": ("sparse", None, None),
        "xlmr-nli": ("classify", list(NLI_LABELS.values()), "softmax"),
        "xlmr-reranker": ("rerank", ["LABEL_0"], "sigmoid")}
    assert cards["bert-reranker"]["default_for"] == ["zmq", "rerank", "predict"]
    assert cards["minilm-reranker"]["semantics"] == "sentence-transformers" and cards["splade"]["dimensions"] == 30522


# a BERT, an XLM-R and two ModernBERT *ForSequenceClassification with one label (ModernBERT's classifier_pooling
# "cls" and "mean", its local layers seeing 8 tokens on either side of the 64 it reads)
RERANKERS = ["bert-reranker", "xlmr-reranker", "modernbert-reranker", "modernbert-mean-reranker"]
CLASSIFIERS = ["nli", "xlmr-nli", "modernbert-nli"]  # and with three


@pytest.mark.parametrize("model", RERANKERS)
def test_rerank_gives_transformers_scores_best_first(served, head_exports, model):
    _, url = served
    pairs = [(QUERY, document) for document in DOCUMENTS]
    logits = classifier_logits(head_exports.sources[model], pairs)[:, 0]
    expected = scores_of(logits, "sigmoid")
    status, ranks = post(url, "/rerank", {"model": model, "query": QUERY, "texts": DOCUMENTS, "return_text": True,
                                          "truncate": True})
    assert status == 200
    assert sorted(rank["index"] for rank in ranks) == list(range(len(DOCUMENTS)))
    assert [rank["score"] for rank in ranks] == sorted((rank["score"] for rank in ranks), reverse=True)
    assert all(rank["text"] == DOCUMENTS[rank["index"]] for rank in ranks)
    got = np.array([next(r["score"] for r in ranks if r["index"] == i) for i in range(len(DOCUMENTS))])
    assert np.abs(got - expected).max() <= 1e-4
    status, raw = post(url, "/rerank", {"model": model, "query": QUERY, "texts": DOCUMENTS, "raw_scores": True,
                                        "truncate": True})
    raw_scores = np.array([next(r["score"] for r in raw if r["index"] == i) for i in range(len(DOCUMENTS))])
    assert status == 200 and "text" not in raw[0] and np.abs(raw_scores - logits).max() <= 1e-4
    # text-embeddings-inference's default: a pair longer than the model reads is refused, not cut
    status, body = post(url, "/rerank", {"model": model, "query": QUERY, "texts": DOCUMENTS})
    assert status == 413
    assert f"document 4 is longer than the 64 tokens model '{model}' reads" in body["description"]
    assert '"truncate": true' in body["description"]


@pytest.mark.parametrize("model", RERANKERS)
def test_v1_rerank_keeps_top_n_best_and_returns_documents_when_asked(served, head_exports, model):
    _, url = served
    from transformers import AutoTokenizer

    documents = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, DOCUMENTS[2], {"text": DOCUMENTS[4]}]
    texts = [d if isinstance(d, str) else d["text"] for d in documents]
    source = head_exports.sources[model]
    expected = scores_of(classifier_logits(source, [(QUERY, t) for t in texts])[:, 0], "sigmoid")
    status, body = post(url, "/v1/rerank", {"model": model, "query": QUERY, "documents": documents, "top_n": 2,
                                            "return_documents": True})
    assert status == 200 and body["model"] == model and len(body["results"]) == 2
    best = list(np.argsort(-expected, kind="stable")[:2])
    assert [r["index"] for r in body["results"]] == best
    assert all(abs(r["relevance_score"] - expected[r["index"]]) <= 1e-4 for r in body["results"])
    assert all(r["document"] == {"text": texts[r["index"]]} for r in body["results"])
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    seen = tokenizer([QUERY] * len(texts), texts, truncation=True)["input_ids"]
    assert body["usage"]["total_tokens"] == sum(map(len, seen))  # long documents cut, as Cohere and Jina cut them
    status, body = post(url, "/v1/rerank", {"model": model, "query": QUERY, "documents": texts})
    assert status == 200 and len(body["results"]) == len(texts) and "document" not in body["results"][0]


@pytest.mark.parametrize("model", CLASSIFIERS)
def test_predict_gives_each_labels_score_best_first(served, head_exports, model):
    _, url = served
    source = head_exports.sources[model]
    inputs = [TEXTS[0], [TEXTS[0], TEXTS[1]], TEXTS[2]]
    logits = np.concatenate([classifier_logits(source, [TEXTS[0]]), classifier_logits(source, [(TEXTS[0], TEXTS[1])]),
                             classifier_logits(source, [TEXTS[2]])])
    status, predictions = post(url, "/predict", {"model": model, "inputs": inputs})
    assert status == 200 and len(predictions) == len(inputs)
    for row, expected in zip(predictions, scores_of(logits, "softmax")):
        assert [p["score"] for p in row] == sorted((p["score"] for p in row), reverse=True)
        by_label = {p["label"]: p["score"] for p in row}
        assert np.abs(np.array([by_label[label] for label in NLI_LABELS.values()]) - expected).max() <= 1e-4
    status, single = post(url, "/predict", {"model": model, "inputs": TEXTS[0], "raw_scores": True})
    assert status == 200 and {p["label"]: p["score"] for p in single} == pytest.approx(
        dict(zip(NLI_LABELS.values(), logits[0].tolist())), abs=1e-4)
    # text-embeddings-inference's rule: a list of exactly two texts is one pair
    status, pair = post(url, "/predict", {"model": model, "inputs": [TEXTS[0], TEXTS[1]]})
    assert status == 200 and pair == predictions[1]
    # a rerank model predicts too: its one label
    status, reranked = post(url, "/predict", {"inputs": [QUERY, DOCUMENTS[0]]})
    expected = scores_of(classifier_logits(head_exports.sources["bert-reranker"], [(QUERY, DOCUMENTS[0])]),
                         "sigmoid")
    assert status == 200 and reranked[0]["label"] == "LABEL_0" and abs(reranked[0]["score"] - expected[0, 0]) <= 1e-4


@pytest.mark.parametrize("model", ["modernbert-reranker", "modernbert-mean-reranker"])
def test_predict_gives_a_modernbert_rerankers_logits_for_texts_and_cut_pairs(served, head_exports, model):
    """Both classifier_pooling modes on /predict: a text, a pair, and a pair past the 64 tokens cut longest-first."""
    _, url = served
    source = head_exports.sources[model]
    pairs = [(QUERY, DOCUMENTS[0]), (QUERY, DOCUMENTS[4])]
    logits = np.concatenate([classifier_logits(source, [DOCUMENTS[4]]), classifier_logits(source, pairs)])[:, 0]
    status, predictions = post(url, "/predict", {"model": model, "inputs": [DOCUMENTS[4], *map(list, pairs)],
                                                 "raw_scores": True, "truncate": True})
    assert status == 200 and [row[0]["label"] for row in predictions] == ["LABEL_0"] * 3
    assert np.abs(np.array([row[0]["score"] for row in predictions]) - logits).max() <= 1e-4
    status, scored = post(url, "/predict", {"model": model, "inputs": list(pairs[0])})
    assert status == 200 and abs(scored[0]["score"] - scores_of(logits[1:2], "sigmoid")[0]) <= 1e-4

def test_a_thousand_documents_rerank_as_the_cross_encoder_predicts(served, head_exports):
    """1,000 (query, document) pairs: tokenized as pairs, cut into chunks of like lengths, scheduled, put back in
    order -- and each score what CrossEncoder.predict gives."""
    from sentence_transformers import CrossEncoder

    bridge, url = served
    documents = passages(1000)
    expected = CrossEncoder(str(head_exports.sources["minilm-reranker"]), device="cpu").predict(
        [(QUERY, d) for d in documents], batch_size=64)
    before = _counted_sentences(url, "minilm-reranker")
    reply = call(f"{url}/v1/rerank", "POST", json_body={"model": "minilm-reranker", "query": QUERY,
                                                         "documents": documents})
    assert reply.status == 200 and float(reply.headers["x-inference-time"]) > 0
    results = reply.json()["results"]
    got = np.zeros(len(documents))
    got[[r["index"] for r in results]] = [r["relevance_score"] for r in results]
    assert np.abs(got - expected).max() <= 1e-5
    assert [r["relevance_score"] for r in results] == sorted(got.tolist(), reverse=True)
    assert _counted_sentences(url, "minilm-reranker") == before + 1000  # a document counts as an encode's sentence


def _counted_sentences(url: str, model: str) -> float:
    text = call(f"{url}/metrics").body.decode()
    pattern = rf'^bert_sentences_total{{frontend="http",model="{model}",outcome="success"}} (\S+)$'
    return float(re.search(pattern, text, re.MULTILINE).group(1))


def test_embed_sparse_is_the_splade_definition(served, head_exports):
    _, url = served
    expected = splade_vectors(head_exports.sources["splade"], SPLADE_TEXTS)
    status, rows = post(url, "/embed_sparse", {"inputs": SPLADE_TEXTS, "truncate": True})
    assert status == 200 and len(rows) == len(SPLADE_TEXTS)
    for row, vector in zip(rows, expected):
        indices = [entry["index"] for entry in row]
        assert indices == sorted(indices) and all(entry["value"] > 0 for entry in row)  # non-zeros only
        got = np.zeros_like(vector)
        got[indices] = [entry["value"] for entry in row]
        assert np.abs(got - vector).max() <= 1e-4
        assert set(np.flatnonzero(vector > 1e-3)) <= set(indices) <= set(np.flatnonzero(vector > 0))
    status, one = post(url, "/embed_sparse", {"inputs": SPLADE_TEXTS[0]})
    assert status == 200 and one == rows[:1]


@pytest.mark.parametrize("path, body, status, fragment", [
    ("/v1/rerank", {"query": QUERY, "documents": []}, 422, "documents: List should have at least 1 item"),
    ("/rerank", {"query": QUERY, "texts": []}, 422, "texts: List should have at least 1 item"),
    ("/v1/rerank", {"query": ["not", "a string"], "documents": ["a"]}, 422, "query: Input should be a valid string"),
    ("/rerank", {"query": 7, "texts": ["a"]}, 422, "query: Input should be a valid string"),
    ("/v1/rerank", {"query": QUERY, "documents": ["a"], "top_n": 0}, 422, "top_n: Input should be greater than or "
                                                                         "equal to 1"),
    ("/v1/rerank", {"query": QUERY, "documents": ["a document"] * 10_000}, 413,
     "the request has 10000 documents; this server accepts at most 5000 per request (--max-request-sentences)"),
    ("/v1/rerank", {"query": QUERY, "documents": ["a", ""]}, 422, "document 1 is not a non-empty string"),
    ("/rerank", {"model": "encoder", "query": QUERY, "texts": ["a"]}, 422,
     "model 'encoder' is an embed model; /rerank (and /v1/rerank) serves rerank models: 'bert-reranker', "
     "'minilm-reranker', 'modernbert-mean-reranker', 'modernbert-reranker', 'xlmr-reranker'"),
    ("/v1/rerank", {"model": "nli", "query": QUERY, "documents": ["a"]}, 422,
     "model 'nli' is a classify model"),
    ("/encode", {"id": 1, "texts": ["a"], "model": "bert-reranker"}, 422,
     "model 'bert-reranker' is a rerank model; /encode serves embed models: 'encoder'"),
    ("/v1/embeddings", {"model": "minilm-reranker", "input": "a"}, 422, "model 'minilm-reranker' is a rerank model"),
    ("/embed_sparse", {"model": "bert-reranker", "inputs": "a"}, 422, "/embed_sparse serves sparse models: 'splade'"),
    ("/predict", {"model": "splade", "inputs": "a"}, 422, "model 'splade' is a sparse model"),
    ("/predict", {"model": "nli", "inputs": ["a", ["b", "c", "d"]]}, 422, "inputs.1: a list input is [text] or "
                                                                             "a pair [text, text]"),
    ("/predict", {"model": "nli", "inputs": "x " * 100}, 413, "input 0 is longer than the 64 tokens"),
])
def test_bad_input_gets_a_clear_4xx_and_the_service_keeps_serving(served, path, body, status, fragment):
    _, url = served
    got, reply = post(url, path, body)
    message = reply["error"]["message"] if path.startswith("/v1/") else reply["description"]
    assert (got, fragment in message) == (status, True), reply
    ok, ranks = post(url, "/rerank", {"query": QUERY, "texts": DOCUMENTS[:2]})
    assert ok == 200 and len(ranks) == 2


def test_the_1_10_client_gets_a_rerankers_scores_of_pairs_and_texts(served, head_exports, legacy_client):
    bridge, _ = served
    inputs = [f"{QUERY} ||| {document}" for document in DOCUMENTS] + TEXTS
    with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60_000,
                                  check_length=False) as bc:
        scores = bc.encode(inputs)
    source = head_exports.sources["bert-reranker"]
    logits = np.concatenate([classifier_logits(source, [(QUERY, d) for d in DOCUMENTS]),
                             classifier_logits(source, TEXTS)])
    assert scores.shape == (len(inputs), 1)
    assert np.abs(scores - scores_of(logits, "sigmoid")).max() <= 1e-4


@pytest.mark.parametrize("model", ["nli", "xlmr-reranker", "xlmr-nli"])
def test_the_1_10_client_gets_a_classifiers_scores_from_its_own_bridge(start_bridge, head_exports, legacy_client,
                                                                       model):
    inputs = [f"{QUERY} ||| {document}" for document in DOCUMENTS] + TEXTS
    with start_bridge("-model_dir", str(head_exports.folder(model)), "--triton-url", head_exports.triton_url) as \
            bridge, legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60_000,
                                             check_length=False) as bc:
        scores = bc.encode(inputs)
        config = bc.server_config
    source = head_exports.sources[model]
    logits = np.concatenate([classifier_logits(source, [(QUERY, d) for d in DOCUMENTS]),
                             classifier_logits(source, TEXTS)])
    labels, activation = (1, "sigmoid") if "reranker" in model else (3, "softmax")
    assert scores.shape == (len(inputs), labels) and np.abs(scores - scores_of(logits, activation)).max() <= 1e-4
    assert config["models"][0]["task"] == ("rerank" if labels == 1 else "classify") and config["max_seq_len"] == 64


def test_http_bert_client_reranks_and_predicts(served, head_exports):
    from bert_serving.client import HTTPBertClient

    _, url = served
    client = HTTPBertClient(url=url, batch_size=2)  # three POSTs, merged and ranked
    ranks = client.rerank(QUERY, DOCUMENTS, top_n=3, return_documents=True)
    source = head_exports.sources["bert-reranker"]
    expected = scores_of(classifier_logits(source, [(QUERY, d) for d in DOCUMENTS])[:, 0], "sigmoid")
    assert [r["index"] for r in ranks] == list(np.argsort(-expected, kind="stable")[:3])
    assert all(abs(r["score"] - expected[r["index"]]) <= 1e-4 and r["text"] == DOCUMENTS[r["index"]] for r in ranks)
    predictions = client.predict([TEXTS[0], (TEXTS[0], TEXTS[1]), TEXTS[2]], model="nli")
    assert [[p["label"] for p in row][0] for row in predictions] == [
        max(row, key=lambda p: p["score"])["label"] for row in predictions] and len(predictions) == 3
    from bert_serving.client import ServerError

    with pytest.raises(ServerError, match="model 'nli' is a classify model"):
        client.rerank(QUERY, DOCUMENTS, model="nli")


def test_fuzzed_head_routes_get_no_server_error(served):
    """schemathesis' requests, valid and not, to the four routes on a bridge whose models serve them: never a 5xx,
    and afterwards a rerank still works (tests/http_api/test_http_fuzz.py fuzzes them where no model serves them)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    _, url = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()
                  if result.ok().path in ("/rerank", "/v1/rerank", "/predict", "/embed_sparse")]
    assert len(operations) == 4
    statuses = set()
    for operation in operations:

        @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case):
            response = case.call(timeout=30)
            statuses.add((operation.path, response.status_code))
            case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])

        fuzz()
    assert {status for _, status in statuses} >= {200, 422}, statuses
    ok, ranks = post(url, "/rerank", {"query": QUERY, "texts": DOCUMENTS[:2]})
    assert ok == 200 and len(ranks) == 2


def test_a_new_user_serves_a_cross_encoder_folder_as_it_is(start_bridge, head_models, tmp_path):
    """bert-serving-start -model_dir <a CrossEncoder folder>: exported on the fly with its head (no flag names it),
    reranking as CrossEncoder.predict; the same for a masked LM with -pooling_strategy SPLADE, side by side."""
    from sentence_transformers import CrossEncoder

    port = free_port()
    folder, masked_lm = head_models.cross_encoder(), head_models.masked_lm()
    with start_bridge("-model_dir", str(folder), "-http_port", str(port), "-cache_dir", str(tmp_path)) as bridge:
        status, body = post(f"http://127.0.0.1:{port}", "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS})
        log = bridge.log()
    expected = CrossEncoder(str(folder), device="cpu").predict([(QUERY, d) for d in DOCUMENTS])
    assert status == 200 and "its classification head (rerank: LABEL_0, sigmoid scores), max_seq_len 64" in log
    got = np.zeros(len(DOCUMENTS))
    got[[r["index"] for r in body["results"]]] = [r["relevance_score"] for r in body["results"]]
    assert np.abs(got - expected).max() <= 1e-5
    from bert_bridge.config import parse_args
    from bert_bridge.model_source import _export_arguments

    splade = _export_arguments(parse_args(["-model_dir", str(masked_lm), "-pooling_strategy", "SPLADE"]), masked_lm)
    classifier = _export_arguments(parse_args(["-model_dir", str(folder)]), folder)
    embedder = _export_arguments(parse_args(["-model_dir", str(folder), "-pooling_strategy", "REDUCE_MEAN"]), folder)
    assert "SPLADE" in splade and "-pooling_layer" not in splade  # the head reads the last layer
    assert "-pooling_strategy" not in classifier and "-pooling_layer" not in classifier  # bert-export: its head
    assert embedder[embedder.index("-pooling_strategy") + 1] == "REDUCE_MEAN"  # named: its encoder, pooled
