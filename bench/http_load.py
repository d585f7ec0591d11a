"""HTTP ``POST /v1/embeddings`` against ZeroMQ on one running bridge: the same requests, the fronts taking turns.

``python -m bert_bench.http_load -port 5555 -port_out 5556 -http_port 8125`` (the bridge started with
``-http_port 8125 -http_max_connect 64`` or more, serving one model, so that both fronts reach the same export).
Two shapes, each measured the way bench/paired.py measures: 64 concurrent clients sending one 32-sentence request
each (a "batch" of 2,048 sentences), and one client sending 256 sentences in one request. Every client connects and
warms up once; then, round by round (``-rounds``, three times as many for the one client), each front sends the same
batch once, the order rotating, and a front's speed is the batch's sentences over its median batch time: load from
other processes then falls on both fronts alike, and the median ignores the bursts that make a whole batch up to
twice as slow on a shared machine. ZeroMQ clients are
``BertClient``; HTTP clients post the same sentences to ``/v1/embeddings`` over a kept-alive connection and read the
floats of the JSON reply (orjson), as a speed-minded OpenAI client would. The vectors of both fronts are compared.
Writes OUTPUT.json and OUTPUT.md: sentences/s per front and shape, the ratio HTTP / ZeroMQ of each shape, and with
``-bridge_pid`` the bridge process's CPU time per sentence (docs/HTTP.md, docs/PERFORMANCE.md).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import orjson

from .paired import take_turns

# (name, concurrent clients, sentences per request): the two shapes of issue 23.
SHAPES = (("64x32", 64, 32), ("1x256", 1, 256))
FRONTS = ("zmq", "http")
WORDS = ("the service encodes sentences into vectors with a model exported for triton and served over zeromq and "
         "http so that clients written for the original keep working while new ones speak openai").split()


def benchmark_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` different ordinary sentences of 6 to 20 words (about 8 to 25 tokens), the same for both fronts."""
    rng = np.random.default_rng(seed)
    return [" ".join(WORDS[int(k)] for k in rng.integers(len(WORDS), size=int(rng.integers(6, 21))))
            for _ in range(count)]


class OpenAIEmbeddingsClient:
    """``encode(sentences)`` through ``POST /v1/embeddings`` on one kept-alive connection: float32 rows."""

    def __init__(self, ip: str, port: int, timeout_ms: int, api_key: Optional[str]):
        self.connection = http.client.HTTPConnection(ip, port, timeout=timeout_ms / 1000)
        self.headers = {"content-type": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    def encode(self, sentences: list[str]) -> np.ndarray:
        body = orjson.dumps({"input": sentences})
        try:
            response = self._post(body)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the connection while it sat idle (uvicorn's keep-alive lasts 5 s, and a front idles
            # while the other takes its turn): a new one, as HTTP client libraries do.
            self.connection.close()
            response = self._post(body)
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:300]!r}")
        return np.array([item["embedding"] for item in orjson.loads(body)["data"]], dtype=np.float32)

    def _post(self, body: bytes) -> http.client.HTTPResponse:
        self.connection.request("POST", "/v1/embeddings", body=body, headers=self.headers)
        return self.connection.getresponse()

    def close(self) -> None:
        self.connection.close()


def _client(args, front: str):
    if front == "http":
        return OpenAIEmbeddingsClient(args.ip, args.http_port, args.timeout_ms, args.api_key)
    from bert_serving.client import BertClient

    return BertClient(ip=args.ip, port=args.port, port_out=args.port_out, timeout=args.timeout_ms,
                      check_length=False)


class Fleet:
    """``num_client`` clients of one front; ``encode(sentences)`` splits the sentences among them, every client
    sending its share as one request, all at once, and returns the rows in order."""

    def __init__(self, args, front: str, num_client: int):
        self.clients = [_client(args, front) for _ in range(num_client)]
        self.threads = ThreadPoolExecutor(num_client) if num_client > 1 else None

    def encode(self, sentences: list[str]) -> np.ndarray:
        if self.threads is None:
            return np.asarray(self.clients[0].encode(sentences))
        shares = np.array_split(np.arange(len(sentences)), len(self.clients))
        replies = self.threads.map(lambda client, share: client.encode([sentences[i] for i in share]),
                                   self.clients, shares)
        return np.concatenate([np.asarray(reply) for reply in replies])

    def close(self) -> None:
        if self.threads is not None:
            self.threads.shutdown()
        for client in self.clients:
            client.close()


def _cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """User + system CPU time of a local process (the bridge), from /proc; None when not asked or not readable."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metered(encode: Callable, pid: Optional[int], spent: list) -> Callable:
    """``encode`` that appends (bridge CPU seconds or None, this process's CPU seconds) of each call to ``spent``:
    the clients of one front run alone during its turn, so this process's CPU is theirs (reading the replies)."""
    def run(sentences):
        before, client_before = _cpu_seconds(pid), time.process_time()
        vectors = encode(sentences)
        after, client_after = _cpu_seconds(pid), time.process_time()
        bridge = after - before if before is not None and after is not None else None
        spent.append((bridge, client_after - client_before))
        return vectors
    return run


def rounds_for(num_client: int, rounds: int) -> int:
    """One client's request is a tenth of a 64-client batch and as exposed to a burst of other load: three times the
    rounds, for a median as steady at a fraction of the time."""
    return rounds if num_client > 1 else 3 * rounds


def measure_shape(args, name: str, num_client: int, batch_size: int) -> dict:
    sentences = benchmark_sentences(num_client * batch_size)
    rounds = rounds_for(num_client, args.rounds)
    fleets = {front: Fleet(args, front, num_client) for front in FRONTS}
    cpu: dict[str, list] = {front: [] for front in FRONTS}
    try:
        results = take_turns({front: _metered(fleets[front].encode, args.bridge_pid, cpu[front])
                              for front in FRONTS}, sentences, rounds)
    finally:
        for fleet in fleets.values():
            fleet.close()
    shape = {"shape": name, "num_client": num_client, "batch_size": batch_size, "rounds": rounds,
             "fronts": {}, "max_abs_difference": float(np.max(np.abs(results["http"].vectors
                                                                      - results["zmq"].vectors)))}
    for front in FRONTS:
        result = results[front]
        entry = {"sentences_per_s": result.sentences_per_s,
                 "median_batch_s": float(np.median(result.latencies_s)),
                 "batch_s": [round(seconds, 4) for seconds in result.latencies_s]}
        counted = cpu[front][1:]  # the warm-up is not counted
        per_sentence = 1000 / (len(counted) * len(sentences))
        entry["client_cpu_ms_per_sentence"] = per_sentence * sum(client for _, client in counted)
        if all(bridge is not None for bridge, _ in counted):
            entry["bridge_cpu_ms_per_sentence"] = per_sentence * sum(bridge for bridge, _ in counted)
        shape["fronts"][front] = entry
    shape["ratio_http_to_zmq"] = shape["fronts"]["http"]["sentences_per_s"] / shape["fronts"]["zmq"]["sentences_per_s"]
    return shape


def compare(args) -> dict:
    shapes = []
    for name, num_client, batch_size in args.shapes:
        shape = measure_shape(args, name, num_client, batch_size)
        shapes.append(shape)
        fronts = shape["fronts"]
        print(f"{name}: ZeroMQ {fronts['zmq']['sentences_per_s']:.1f} sentences/s, HTTP "
              f"{fronts['http']['sentences_per_s']:.1f} sentences/s, HTTP / ZeroMQ = "
              f"{shape['ratio_http_to_zmq']:.3f}", flush=True)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "load_average": list(os.getloadavg()),
        "shapes": shapes,
        "ratio_http_to_zmq": {shape["shape"]: shape["ratio_http_to_zmq"] for shape in shapes},
    }


def write(result: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    load = ", ".join(f"{value:.2f}" for value in result["load_average"])
    rows = [f"HTTP `POST /v1/embeddings` against ZeroMQ on one bridge, the same sentences, the fronts taking turns "
            f"batch by batch (order rotating, median batch time; {result['machine']}; "
            f"load average at the end {load}).", "",
            "| shape | rounds | front | sentences/s | median batch s | bridge CPU ms per sentence "
            "| clients' CPU ms per sentence | HTTP / ZeroMQ |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for shape in result["shapes"]:
        for front in FRONTS:
            entry = shape["fronts"][front]
            bridge_cpu = entry.get("bridge_cpu_ms_per_sentence")
            cells = [f"{shape['num_client']} x {shape['batch_size']}", str(shape["rounds"]), front,
                     f"{entry['sentences_per_s']:.1f}", f"{entry['median_batch_s']:.3f}",
                     f"{bridge_cpu:.3f}" if bridge_cpu is not None else "",
                     f"{entry['client_cpu_ms_per_sentence']:.3f}",
                     f"**{shape['ratio_http_to_zmq']:.3f}**" if front == "http" else ""]
            rows.append("| " + " | ".join(cells) + " |")
    rows += ["", "Largest difference between the two fronts' vectors: "
             + ", ".join(f"{shape['shape']} {shape['max_abs_difference']:.1g}" for shape in result["shapes"])
             + ". Every batch time is in the JSON file."]
    output.with_suffix(".md").write_text("\n".join(rows) + "\n")


def _shape(text: str) -> tuple:
    clients, _, batch = text.partition("x")
    if not (clients.isdigit() and batch.isdigit() and int(clients) > 0 and int(batch) > 0):
        raise argparse.ArgumentTypeError(f"a shape is CLIENTSxSENTENCES, like 64x32, not '{text}'")
    return text, int(clients), int(batch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bert_bench.http_load", description=__doc__.splitlines()[0])
    parser.add_argument("-ip", default="localhost")
    parser.add_argument("-port", type=int, default=5555)
    parser.add_argument("-port_out", type=int, default=5556)
    parser.add_argument("-http_port", type=int, default=8125)
    parser.add_argument("-api_key", default=None, help="the bridge's --api-key, if it has one")
    parser.add_argument("-shapes", type=_shape, nargs="+", default=[_shape(f"{c}x{b}") for _, c, b in SHAPES],
                        help="CLIENTSxSENTENCES: concurrent clients, sentences per request (default: 64x32 1x256)")
    parser.add_argument("-rounds", type=int, default=9, help="batches per front and shape after one warm-up; three "
                        "times as many for a shape of one client")
    parser.add_argument("-bridge_pid", type=int, default=None,
                        help="also report the bridge process's CPU time per sentence (a bridge on this machine)")
    parser.add_argument("-timeout_ms", type=int, default=600_000)
    parser.add_argument("-output", type=Path, default=Path("bench/results/http_vs_zmq"),
                        help="writes OUTPUT.json and OUTPUT.md")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    result = compare(args)
    write(result, args.output)
    print("HTTP / ZeroMQ = " + ", ".join(f"{name} {ratio:.3f}" for name, ratio in result["ratio_http_to_zmq"].items()))
    print(f"wrote {args.output.with_suffix('.json')} and {args.output.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
