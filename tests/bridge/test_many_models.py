"""Several models behind one bridge and one Triton (issue 21).

One bridge serves three exports: the packaged all-MiniLM-L6-v2 with bert-as-service's defaults as ``minilm`` (the
default model: ZeroMQ and /encode), the same weights with -pooling_strategy AUTO as ``all-MiniLM-L6-v2`` (the
sentence-transformers semantics /v1/embeddings answers by default), and a tiny random BERT saved as a CLS-pooling
sentence-transformers model (``tiny-cls``, 32 wide, 64 tokens). The oracles are someone else's code: the unmodified
1.10 client against transformers, the official openai SDK against ``SentenceTransformer(folder).encode``.

Done when 1 and 3: the vectors of each route and model. Done when 4: two clients on two models at once, each side of
the other's big request within the fairness bound that holds for one model (tests/bridge/test_fairness.py measures it
the same way, in chunks Triton computed, from its own statistics), then the embedded Triton killed under load from
both and both recovering (the last test here: it runs on the same bridge). Done when 5: a whole --model-repository
with a broken export and an unreadable one beside good ones, on a bridge of its own.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bert_bridge.config import parse_args
from bert_bridge.core.service import INFLIGHT_BATCHES
from bert_bridge.errors import StartupError
from bert_bridge.model_source import resolve_model, settle_models
from bert_exporter.options import packaged_model_dir
from harness import RunningBridge, free_port
from test_fairness import RawClient, sentences
from test_legacy_client_end_to_end import transformers_mean_pool
from test_triton_restart import triton_process, wait_until
from tiny_models import perturbed

pytestmark = pytest.mark.slow

MINILM, ST, TINY = "minilm", "all-MiniLM-L6-v2", "tiny-cls"
TINY_WIDTH, TINY_LENGTH = 32, 64
SHORT = ["First do it", "then do it right", "then do it better", "Café naïve résumé à Zürich"]
PASSAGE = " ".join(["The river carried the autumn leaves past the old mill, where the miller's children counted them "
                    "until the light went out of the valley."] * 14)  # 308 words, past 256 tokens
MAX_BATCH_SIZE = 8  # as test_fairness.py: chunks of a few milliseconds, so the bound is tight and the test quick
CAPACITY = INFLIGHT_BATCHES * MAX_BATCH_SIZE
CHUNK = CAPACITY // 2
BIG, SMALL = 5000, 17  # SMALL is above -priority_batch_size (16): it gets no priority, only its turns
SLACK = 3  # test_fairness.py's allowance for a shared machine


# --- the models ------------------------------------------------------------------------------------------------------

def tiny_cls_model(folder: Path) -> Path:
    """A random 2-layer, 32-wide BERT with the packaged model's vocabulary, saved by sentence-transformers itself as
    Transformer (max_seq_length 64) -> Pooling(cls)."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(21)
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=30522, hidden_size=TINY_WIDTH, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=128)).eval()
    perturbed(bert)
    hf = folder / "hf"
    bert.save_pretrained(hf)
    # from the folder: transformers 5 ignores BertTokenizerFast(vocab_file=...) and builds a 5-token vocabulary
    transformers.BertTokenizerFast.from_pretrained(str(packaged_model_dir())).save_pretrained(hf)
    model = SentenceTransformer(modules=[models.Transformer(str(hf), max_seq_length=TINY_LENGTH),
                                         models.Pooling(TINY_WIDTH, pooling_mode="cls")], device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"


def bert_export(*args) -> None:
    result = subprocess.run([sys.executable, "-m", "bert_exporter.cli", *map(str, args)], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory) -> Path:
    return tiny_cls_model(tmp_path_factory.mktemp("tiny-cls"))


@pytest.fixture(scope="module")
def exports(default_export, tiny_source, tmp_path_factory) -> dict:
    """name -> export folder. The AUTO export is the one the bridge itself makes on the fly (cached, shared with
    test_sentence_transformers_serving.py); the tiny model gets an explicit bert-export, as per-model flags do."""
    repository = tmp_path_factory.mktemp("exports")
    bert_export("-model_dir", tiny_source, "-pooling_strategy", "AUTO", "-output", repository, "-name", TINY)
    auto = resolve_model(parse_args(["-pooling_strategy", "AUTO"]))
    return {MINILM: default_export.folder, ST: auto.folder, TINY: repository / TINY}


def st_encode(folder: Path, texts: list[str], **kwargs) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    truncate_dim = kwargs.pop("truncate_dim", None)
    return SentenceTransformer(str(folder), device="cpu", truncate_dim=truncate_dim).encode(
        texts, convert_to_numpy=True, batch_size=8, **kwargs)


def st_tokens_seen(folder: Path, texts: list[str]) -> int:
    """Tokens sentence-transformers feeds its model: truncated to max_seq_length, [CLS]/[SEP] included."""
    from sentence_transformers import SentenceTransformer

    return int(SentenceTransformer(str(folder), device="cpu").tokenize(texts)["attention_mask"].sum())


# --- one bridge serving the three ------------------------------------------------------------------------------------

@dataclass
class Served:
    bridge: RunningBridge
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def openai(self):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=120)


def http(url: str, body: dict | None = None, timeout_s: float = 120) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of a GET, or of a POST of ``body``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


@pytest.fixture(scope="module")
def served(start_bridge, exports):
    http_port = free_port()
    flags = [flag for name, folder in exports.items() for flag in ("-model_dir", f"{name}={folder}")]
    with start_bridge(*flags, "-http_port", str(http_port), "-max_batch_size", str(MAX_BATCH_SIZE),
                      "-http_max_connect", "64") as bridge:
        yield Served(bridge, http_port)


def test_the_1_10_client_gets_the_original_vectors_of_the_default_model(served, legacy_client, hf_model):
    bridge = served.bridge
    with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000) as bc:
        vectors = bc.encode(SHORT + [PASSAGE])
        config = bc.server_config
    expected = transformers_mean_pool(hf_model, SHORT + [PASSAGE], layer=-2, max_seq_len=25)
    assert np.abs(vectors - expected).max() <= 1e-4
    # SHOW_CONFIG: the original's keys for the default model, which it names, and every model listed
    assert (config["max_seq_len"], config["pooling_layer"], config["pooling_strategy"]) == (25, [-2], 2)
    assert config["model_name"] == MINILM
    assert [model["id"] for model in config["models"]] == [MINILM, ST, TINY]


def test_the_openai_sdk_gets_sentence_transformers_vectors_and_truncation_is_said(served, exports):
    # an OpenAI input is one text: a ' ||| ' in it is text, as sentence-transformers reads it (not ZeroMQ's pair)
    texts = SHORT + [PASSAGE, "  the quick brown fox ||| jumps over the lazy dog "]
    raw = served.openai().embeddings.with_raw_response.create(model=ST, input=texts)
    response = raw.parse()
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    expected = st_encode(packaged_model_dir(), texts)
    assert vectors.shape == expected.shape == (len(texts), 384)
    assert np.abs(vectors - expected).max() <= 1e-5
    assert response.model == ST
    # usage counts what the model saw: the passage cut at 256 tokens, as sentence-transformers cuts it
    assert response.usage.prompt_tokens == st_tokens_seen(packaged_model_dir(), texts)
    assert raw.headers["x-truncated-inputs"] == "1"


def test_the_third_models_name_gets_its_own_vectors(served, tiny_source):
    texts = SHORT + [PASSAGE]
    response = served.openai().embeddings.create(model=TINY, input=texts, encoding_format="float")
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    expected = st_encode(tiny_source, texts)
    assert vectors.shape == expected.shape == (len(texts), TINY_WIDTH)
    assert np.abs(vectors - expected).max() <= 1e-5
    assert response.model == TINY and response.usage.prompt_tokens == st_tokens_seen(tiny_source, texts)


def test_an_unknown_model_is_a_404_the_sdk_raises_as_not_found(served):
    import openai

    with pytest.raises(openai.NotFoundError) as raised:
        served.openai().embeddings.create(model="text-embedding-3-small", input=["hello"])
    assert raised.value.code == "model_not_found" and ST in str(raised.value)
    status, _, body = http(f"{served.url}/encode", {"id": 3, "texts": ["hello"], "model": "nope"})
    assert status == 404 and (body["id"], body["type"], body["status"]) == (3, "ModelNotFound", 404)
    status, _, body = http(f"{served.url}/v1/models/nope")
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_dimensions_shorten_the_normalized_model_as_truncate_dim_does(served):
    import openai

    texts = SHORT + [PASSAGE]
    response = served.openai().embeddings.create(model=ST, input=texts, dimensions=128)
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    # sentence-transformers' truncate_dim keeps the first 128 values; normalize_embeddings brings them to unit length,
    # as OpenAI's dimensions does. Without it, the same direction at a length below 1.
    expected = st_encode(packaged_model_dir(), texts, truncate_dim=128, normalize_embeddings=True)
    assert vectors.shape == (len(texts), 128) and np.abs(vectors - expected).max() <= 1e-5
    cut = st_encode(packaged_model_dir(), texts, truncate_dim=128)
    assert np.abs(vectors - cut / np.linalg.norm(cut, axis=1, keepdims=True)).max() <= 1e-5
    with pytest.raises(openai.UnprocessableEntityError, match="only a model whose vectors are normalized"):
        served.openai().embeddings.create(model=MINILM, input=texts, dimensions=128)
    with pytest.raises(openai.UnprocessableEntityError, match="can shorten them to 1 to 383"):
        served.openai().embeddings.create(model=ST, input=texts, dimensions=385)


def test_each_route_has_its_default_model(served):
    bridge = served.bridge
    from bert_serving.client import BertClient

    with BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000) as bc:
        zmq_vectors = bc.encode(SHORT)
    status, _, body = http(f"{served.url}/encode", {"id": 1, "texts": SHORT})
    assert status == 200 and np.abs(np.array(body["result"]) - zmq_vectors).max() <= 1e-6
    status, _, body = http(f"{served.url}/v1/embeddings", {"input": SHORT})  # no model field
    assert status == 200 and body["model"] == ST
    without = np.array([d["embedding"] for d in body["data"]])
    status, _, body = http(f"{served.url}/encode", {"id": 2, "texts": SHORT, "model": ST})
    assert status == 200 and np.abs(np.array(body["result"]) - without).max() <= 1e-6
    assert np.abs(without - st_encode(packaged_model_dir(), SHORT)).max() <= 1e-5


def test_v1_models_ready_and_metrics_describe_every_model(served):
    status, _, body = http(f"{served.url}/v1/models")
    cards = {card["id"]: card for card in body["data"]}
    assert status == 200 and list(cards) == [MINILM, ST, TINY]
    assert {name: (card["dimensions"], card["max_tokens"], card["semantics"], card["task"], card["ready"])
            for name, card in cards.items()} == {
        MINILM: (384, 25, "bert-as-service", "embed", True),
        ST: (384, 256, "sentence-transformers", "embed", True),
        TINY: (TINY_WIDTH, TINY_LENGTH, "sentence-transformers", "embed", True)}
    assert cards[MINILM]["default_for"] == ["zmq", "encode"] and cards[ST]["default_for"] == ["embeddings"]
    status, _, ready = http(f"{served.url}/ready")
    assert status == 200 and ready["models"] == {name: {"ready": True} for name in cards}
    with urllib.request.urlopen(f"{served.url}/metrics", timeout=30) as reply:
        metrics = reply.read().decode()
    for name in cards:
        assert f'bert_requests_total{{frontend="openai",model="{name}",outcome="success"}}' in metrics


# --- Done when 4: fairness across models, then a Triton outage ------------------------------------------------------

class Triton:
    """Triton's own count of the sentences it computed, all models together."""

    def __init__(self, url: str):
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(url)

    def inferred(self) -> int:
        stats = self.client.get_inference_statistics("", as_json=True)
        return sum(int(model.get("inference_count", 0)) for model in stats["model_stats"])

    def wait_until_inferred(self, count: int, timeout_s: float = 120) -> None:
        wait_until(lambda: self.inferred() >= count, timeout_s, f"Triton computing {count} sentences")

    def wait_until_quiet(self, quiet_s: float = 1.0, timeout_s: float = 120) -> int:
        deadline = time.monotonic() + timeout_s
        last, since = self.inferred(), time.monotonic()
        while time.monotonic() - since < quiet_s:
            assert time.monotonic() < deadline, "Triton kept computing"
            time.sleep(0.05)
            now = self.inferred()
            if now != last:
                last, since = now, time.monotonic()
        return last


def http_request_bytes(path: str, body: dict, port: int) -> bytes:
    payload = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


@pytest.mark.parametrize("big_on", ["zmq", "http"])
def test_two_clients_on_two_models_take_turns(served, big_on):
    """One client's 5,000 sentences on one model, another's 17 on the other: the 17 wait no longer than the bound of
    bridge/core/scheduler.py for one model, counted in chunks Triton computed meanwhile (any model's)."""
    import zmq

    context = zmq.Context()
    client = RawClient(context, served.bridge.port, served.bridge.port_out)  # the default model, minilm
    triton = Triton(client.config["triton"]["url"])
    big_http = None
    try:
        before = triton.wait_until_quiet()
        if big_on == "zmq":
            client.send(sentences(BIG, seed=40))
        else:
            big_http = socket.create_connection(("127.0.0.1", served.http_port))
            big_http.sendall(http_request_bytes("/v1/embeddings", {"model": ST, "input": sentences(BIG, seed=41)},
                                                served.http_port))
        triton.wait_until_inferred(before + 2 * CHUNK)  # the big request is being computed
        sent_at = triton.inferred()
        if big_on == "zmq":
            status, _, body = http(f"{served.url}/v1/embeddings", {"model": ST, "input": sentences(SMALL, seed=42)})
            assert status == 200 and len(body["data"]) == SMALL
        else:
            assert client.call(sentences(SMALL, seed=43)).shape[0] == SMALL
        answered_at = triton.inferred()
    finally:
        client.close()  # the big ZeroMQ request's client leaves: the bridge stops it
        if big_http is not None:
            big_http.close()  # as does closing the big HTTP request's connection
        context.term()
    assert answered_at - before - SMALL < BIG / 2, "the big request was nearly done: the small one was not served beside it"
    own_chunks = math.ceil(SMALL / CHUNK)
    bound_chunks = SLACK * (CAPACITY // CHUNK + 2 * own_chunks)
    waited_chunks = (answered_at - sent_at) / CHUNK
    assert waited_chunks <= bound_chunks, (
        f"{SMALL} sentences waited while Triton computed {waited_chunks:.0f} chunks of any model next to {BIG} on "
        f"the other model; the bound with slack is {bound_chunks}")
    stopped_at = triton.wait_until_quiet()
    assert stopped_at - before < BIG / 2, "the big request went on after its client left"


def test_killing_the_embedded_triton_under_load_from_both_recovers_both(served):
    """Last on this bridge: it kills its tritonserver."""
    import openai
    from bert_serving.client import BertClient

    bridge = served.bridge
    texts = SHORT[:3]
    with BertClient(port=bridge.port, port_out=bridge.port_out, timeout=20000) as bc:
        zmq_reference = bc.encode(texts)
    http_reference = np.array([d.embedding for d in served.openai().embeddings.create(
        model=ST, input=texts, encoding_format="float").data], dtype=np.float32)
    outcomes: dict[str, list] = {"zmq": [], "openai": []}
    stop = threading.Event()

    def zmq_load() -> None:
        with BertClient(port=bridge.port, port_out=bridge.port_out, timeout=20000) as bc:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    ok = np.abs(bc.encode(texts) - zmq_reference).max() <= 1e-5
                    outcomes["zmq"].append((sent, "vectors" if ok else "wrong vectors"))
                except Exception as e:  # every outcome is recorded and asserted on
                    outcomes["zmq"].append((sent, f"{type(e).__name__}: {e}"))
                    time.sleep(0.05)

    def openai_load() -> None:
        client = served.openai().with_options(timeout=20)
        while not stop.is_set():
            sent = time.monotonic()
            try:
                data = client.embeddings.create(model=ST, input=texts, encoding_format="float").data
                ok = np.abs(np.array([d.embedding for d in data]) - http_reference).max() <= 1e-5
                outcomes["openai"].append((sent, "vectors" if ok else "wrong vectors"))
            except openai.APIStatusError as e:
                outcomes["openai"].append((sent, f"{e.status_code} {e.body}"))
                time.sleep(0.05)
            except openai.APIError as e:  # a timeout or a broken connection: recorded, fails the test below
                outcomes["openai"].append((sent, f"{type(e).__name__}: {e}"))

    threads = [threading.Thread(target=load, daemon=True) for load in (zmq_load, openai_load)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(o and o[-1][1] == "vectors" for o in outcomes.values()), 60, "both models serving")
        triton = triton_process(bridge.process.pid)
        assert triton, "the bridge runs a tritonserver"
        killed_at = time.monotonic()
        os.kill(triton, signal.SIGKILL)
        wait_until(lambda: all(any(sent > killed_at and outcome == "vectors" for sent, outcome in o)
                               for o in outcomes.values()), 90, "both models serving again")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a client hangs"
    for name, records in outcomes.items():
        for _, outcome in records:
            assert outcome == "vectors" or "BackendUnavailable" in outcome or "backend_unavailable" in outcome, (
                name, outcome)
    assert any(outcome != "vectors" for o in outcomes.values() for _, outcome in o), "the kill failed no request"
    status, _, ready = http(f"{served.url}/ready")
    assert status == 200 and all(model["ready"] for model in ready["models"].values())
    assert "serves again" in bridge.log()


# --- Done when 5: a whole repository with broken exports beside good ones --------------------------------------------

@pytest.fixture(scope="module")
def repository_with_broken_exports(exports, tmp_path_factory) -> Path:
    """good -> the default export, tiny -> the tiny one (links); broken: the tiny export with an ONNX file that is not
    one (Triton cannot load it); unreadable: a bert_export.json that is not JSON."""
    import shutil

    repository = tmp_path_factory.mktemp("repository")
    (repository / "good").symlink_to(exports[MINILM], target_is_directory=True)
    (repository / "tiny").symlink_to(exports[TINY], target_is_directory=True)
    broken = repository / "broken"
    shutil.copytree(exports[TINY], broken)
    (broken / "1" / "model.onnx").write_bytes(b"not an onnx model")
    (repository / "unreadable").mkdir()
    (repository / "unreadable" / "bert_export.json").write_text("{not json")
    return repository


def test_a_whole_repository_serves_its_good_models_and_reports_the_broken_ones(start_bridge,
                                                                            repository_with_broken_exports):
    http_port = free_port()
    with start_bridge("--model-repository", str(repository_with_broken_exports), "-http_port", str(http_port)) as bridge:
        url = f"http://127.0.0.1:{http_port}"
        log = bridge.log().splitlines()
        status, _, models = http(f"{url}/v1/models")
        ready_status, _, ready = http(f"{url}/ready")
        encoded = {name: http(f"{url}/v1/embeddings", {"model": name, "input": ["still serving"]})
                   for name in ("good", "tiny", "broken")}
    for name, why in (("broken", "tritonserver could not load it"), ("unreadable", "not a valid bert-export manifest")):
        lines = [line for line in log if f"model '{name}'" in line]
        assert len(lines) == 1 and " W " in lines[0] and why in lines[0], lines
    cards = {card["id"]: card for card in models["data"]}
    assert status == 200 and list(cards) == ["good", "tiny", "broken", "unreadable"]
    assert cards["good"]["ready"] and cards["tiny"]["ready"] and cards["good"]["default_for"] == ["zmq", "encode"]
    assert not cards["broken"]["ready"] and "could not load" in cards["broken"]["error"]
    assert not cards["unreadable"]["ready"] and "manifest" in cards["unreadable"]["error"]
    assert ready_status == 200 and ready["models"]["good"] == ready["models"]["tiny"] == {"ready": True}
    assert not ready["models"]["broken"]["ready"] and not ready["models"]["unreadable"]["ready"]
    assert encoded["good"][0] == encoded["tiny"][0] == 200
    assert len(encoded["tiny"][2]["data"][0]["embedding"]) == TINY_WIDTH
    assert encoded["broken"][0] == 503 and "could not load" in encoded["broken"][2]["error"]["message"]


def test_a_named_model_that_cannot_be_served_fails_the_start(repository_with_broken_exports):
    with pytest.raises(StartupError, match="not a valid bert-export manifest"):
        settle_models(parse_args(["--model-repository", str(repository_with_broken_exports),
                                  "--model-name", "good", "--model-name", "unreadable"]))


def test_two_models_of_one_name_are_refused(exports):
    folder = str(exports[MINILM])
    with pytest.raises(StartupError, match="two models are named 'same'"):
        settle_models(parse_args(["-model_dir", f"same={folder}", "-model_dir", f"same={exports[ST]}"]))
    config, unserved = settle_models(parse_args(["-model_dir", f"a={folder}", "-model_dir", folder]))
    assert [model.name for model in config.models] == ["a", Path(folder).name] and not unserved
