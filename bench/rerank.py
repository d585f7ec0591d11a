"""``bert-serving-benchmark -rerank``: documents/s reranking passages with a cross-encoder, the service beside
sentence-transformers' ``CrossEncoder.predict`` in process, on the same (query, passage) pairs.

The cross-encoder has cross-encoder/ms-marco-MiniLM-L6-v2's shape (a BERT of 6 layers, 384 wide, one label) with
random weights, saved by sentence-transformers' CrossEncoder itself and exported by bert-export (its head in the
graph); the passages are ``-rerank_documents`` texts of about ``-rerank_tokens`` tokens. One bridge serves it (its
embedded tritonserver, -http_port); the contenders take turns on the same pairs (bench/paired.py): the service over
HTTP (``POST /v1/rerank``, all documents in one request), the service over ZeroMQ (the 1.10 protocol's ``query |||
passage`` sentences through our BertClient), and ``CrossEncoder.predict`` with torch on every core. Writes
OUTPUT/rerank.json and OUTPUT/rerank.md (docs/PERFORMANCE.md, "Reranking").
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from .paired import service_encoder, take_turns
from .server_process import free_port, start_server
from .workload import SentenceMaker

QUERY = "how do the tides of the ocean follow the moon"
MS_MARCO_MINILM = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
                   "max_position_embeddings": 512, "num_labels": 1}
SERVICE_HTTP, SERVICE_ZMQ, CROSS_ENCODER = ("service, POST /v1/rerank", "service, ZeroMQ 'query ||| passage'",
                                            "CrossEncoder.predict in process")


def write_cross_encoder(folder: Path, vocab_file: Path) -> Path:
    """ms-marco-MiniLM-L6-v2's shape with random weights, saved as sentence-transformers' CrossEncoder saves it."""
    if (folder / "config_sentence_transformers.json").is_file():
        return folder
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    lines = vocab_file.read_text(encoding="utf-8").split("\n")[:-1]
    source = folder.parent / f"{folder.name}-source"
    tokenizer = transformers.BertTokenizerFast(vocab={token: i for i, token in enumerate(lines)}, do_lower_case=True,
                                               model_max_length=512)
    tokenizer.save_pretrained(source)
    transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=len(lines), **MS_MARCO_MINILM)).eval().save_pretrained(source)
    CrossEncoder(str(source), device="cpu").save(str(folder))
    return folder


def export(source: Path, models: Path) -> Path:
    """bert-export of the cross-encoder (its classification head, the model's own length), reused while the exporter's
    code is unchanged."""
    import subprocess

    from bert_bridge.model_source import exporter_code_digest

    folder = models / f"cross-encoder_{exporter_code_digest()[:8]}"
    if not (folder / "bert_export.json").is_file():
        done = subprocess.run([sys.executable, "-m", "bert_exporter.cli", "-model_dir", str(source), "-output",
                               str(models), "-name", folder.name], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bert-serving-benchmark: bert-export of the cross-encoder failed: {done.stderr.strip()}")
    return folder


def http_rerank(http_port: int):
    def rerank(documents: list[str]) -> np.ndarray:
        body = json.dumps({"query": QUERY, "documents": documents}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/rerank", data=body,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as reply:
            results = json.loads(reply.read())["results"]
        scores = np.zeros(len(documents), np.float32)
        scores[[r["index"] for r in results]] = [r["relevance_score"] for r in results]
        return scores

    return rerank


def run(args) -> dict:
    """Measures, writes OUTPUT/rerank.json and rerank.md, prints the summary; returns the result."""
    import torch
    from sentence_transformers import CrossEncoder
    from tokenizers import BertWordPieceTokenizer

    from bert_exporter.options import packaged_model_dir

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bert-serving" / "bench"
    work = (args.work_dir or cache).resolve()
    vocab = packaged_model_dir() / "vocab.txt"
    source = write_cross_encoder(work / "cross-encoder-ms-marco-minilm-shape", vocab)
    folder = export(source, work / "models")
    passages = SentenceMaker(vocab, args.client_vocab_file, seed=24).sentences(args.rerank_documents,
                                                                            args.rerank_tokens)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    cross_encoder = CrossEncoder(str(source), device="cpu")
    http_port = free_port()
    with ExitStack() as stack:
        server = start_server(["-model_dir", str(folder), "-http_port", str(http_port)],
                              work / "logs" / "rerank-bridge.log", ready_timeout_s=args.wait_till_ready)
        stack.callback(server.stop)
        zmq_encode = stack.enter_context(service_encoder(server))
        results = take_turns({
            SERVICE_HTTP: http_rerank(http_port),
            SERVICE_ZMQ: lambda documents: zmq_encode([f"{QUERY} ||| {d}" for d in documents])[:, 0],
            CROSS_ENCODER: lambda documents: cross_encoder.predict([(QUERY, d) for d in documents],
                                                                   show_progress_bar=False),
        }, passages, args.compare_rounds)
    tokens = [len(e.ids) for e in BertWordPieceTokenizer(str(vocab), lowercase=True).encode_batch(
        [(QUERY, passage) for passage in passages])]
    result = {
        "documents": len(passages), "mean_pair_tokens": float(np.mean(tokens)), "rounds": args.compare_rounds,
        "model": "cross-encoder of ms-marco-MiniLM-L6-v2's shape (6 layers, 384 wide, 1 label), random weights",
        "documents_per_s": {name: r.sentences_per_s for name, r in results.items()},
        "speedup_http_vs_cross_encoder": results[SERVICE_HTTP].sentences_per_s / results[CROSS_ENCODER].sentences_per_s,
        "speedup_zmq_vs_cross_encoder": results[SERVICE_ZMQ].sentences_per_s / results[CROSS_ENCODER].sentences_per_s,
        "max_abs_difference_vs_cross_encoder": max(float(np.abs(results[name].vectors
                                                                - results[CROSS_ENCODER].vectors).max())
                                                   for name in (SERVICE_HTTP, SERVICE_ZMQ)),
        "machine": f"{os.cpu_count()} cores; CrossEncoder with torch on {threads} threads",
    }
    write(result, args.output)
    return result


def write(result: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "rerank.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = ["| contender | documents/s |", "|---|---:|"]
    rows += [f"| {name} | {speed:.1f} |" for name, speed in result["documents_per_s"].items()]
    rows += ["", f"Reranking {result['documents']} passages (query and passage together "
             f"{result['mean_pair_tokens']:.0f} tokens on average) with a {result['model']}; each contender took turns on the same pairs, "
             f"{result['rounds']} rounds, median (bench/paired.py). Service / CrossEncoder.predict: "
             f"{result['speedup_http_vs_cross_encoder']:.2f}x over HTTP, {result['speedup_zmq_vs_cross_encoder']:.2f}x "
             f"over ZeroMQ; largest score difference {result['max_abs_difference_vs_cross_encoder']:.1e}. "
             f"{result['machine']}."]
    (output / "rerank.md").write_text("\n".join(rows) + "\n")
    print((output / "rerank.md").read_text())
