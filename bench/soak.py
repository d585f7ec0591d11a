"""``bert-serving-soak``: many clients for a long time against one service; every reply checked, memory watched.

It starts its own ``bert-serving-start`` (other flags pass through; it adds -http_port so some clients use HTTP) or,
with ``-running``, soaks a service that is already up (-ip/-port/-port_out). ``-num_client`` threads send fixed-seed
streams of requests of 1 to 5,000 sentences for ``-duration`` seconds: blocking, async, clone pairs sharing an
identity, HTTP (bert_bench.soak_clients). Every reply row is compared with the vector transformers computes for its
sentence under the server's pooling (bert_bench.reference_vectors). The RSS of the bridge and of tritonserver with
its python stubs is sampled every second. It writes soak.json and soak.md into -output, prints the summary, and
exits 1 when a target is missed: 0 lost replies, 0 mismatched rows, 0 unexpected errors, RSS growth after warm-up
under -max_rss_growth for each part.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .service_memory import PARTS, ServiceMemory, growth, listening_pid
from .soak_clients import KINDS, Checker, SoakClients, Tally
from .soak_workload import SIZE_CLASSES, RequestPlan, sentence_pool

HTTP_PORT_FLAGS = ("-http_port", "--http_port", "--http-port")
MODEL_DIR_FLAGS = ("-model_dir", "--model_dir", "--model-dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bert-serving-soak", description=__doc__.splitlines()[0],
        epilog="Any other flag (e.g. -max_seq_len 64, -num_worker 2) is passed to the bert-serving-start it starts.")
    load = parser.add_argument_group("the load")
    load.add_argument("-num_client", type=int, default=16,
                      help=f"client threads, of kinds {', '.join(KINDS)} in turn (http only when the server has "
                           "-http_port; a clone client has a listening twin)")
    load.add_argument("-duration", type=float, default=600, help="seconds during which clients send new requests")
    load.add_argument("-max_request_sentences", type=int, default=SIZE_CLASSES[-1].largest,
                      help="the largest request (sizes 1 to this, weighted toward small ones)")
    load.add_argument("-num_distinct", type=int, default=2000,
                      help="distinct sentences the requests draw from (one reference vector each)")
    load.add_argument("-seed", type=int, default=0, help="the same seed sends the same requests")
    load.add_argument("-timeout", type=float, default=600,
                      help="seconds a client waits for a reply before counting it lost")
    load.add_argument("-client_vocab_file", type=Path, default=Path("README.md"),
                      help="words of the sentences (as bert-serving-benchmark's)")
    check = parser.add_argument_group("checks and targets")
    check.add_argument("-tolerance", type=float, default=1e-4,
                       help="largest absolute difference from the reference in any component of a row")
    check.add_argument("-reference_model_dir", type=Path, default=None,
                       help="the Hugging Face folder transformers loads for the reference vectors (default: the "
                            "server's -model_dir, else the packaged model)")
    check.add_argument("-warmup", type=float, default=None,
                       help="seconds of load before the first RSS window (default: a fifth of -duration, at most 60)")
    check.add_argument("-rss_window", type=float, default=None,
                       help="seconds each RSS window averages (default: a fifth of -duration, at most 60)")
    check.add_argument("-max_rss_growth", type=float, default=0.10,
                       help="the RSS target: last window over first window, minus 1, for the bridge and for Triton")
    where = parser.add_argument_group("where")
    where.add_argument("-running", action="store_true",
                       help="soak the service at -ip/-port/-port_out instead of starting one")
    where.add_argument("-ip", default="localhost")
    where.add_argument("-port", type=int, default=5555)
    where.add_argument("-port_out", type=int, default=5556)
    where.add_argument("-http_port", type=int, default=None,
                       help="with -running: the service's HTTP port (default: what its server_config says)")
    where.add_argument("-pid", type=int, default=None,
                       help="with -running: the bridge's process id for RSS (default: the local process on -port)")
    where.add_argument("-output", type=Path, default=Path("bench/results/soak"), help="folder for the result files")
    where.add_argument("-wait_till_ready", type=float, default=600, help="seconds the server may take to be ready")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args, server_flags = parser.parse_known_args(argv)
    if args.running and server_flags:
        parser.error(f"unrecognized arguments with -running: {' '.join(server_flags)}")
    if args.num_client < 1 or args.duration <= 0:
        parser.error("-num_client and -duration must be positive")
    result = Soak(args, server_flags).run()
    sys.exit(0 if result["targets"]["met"] else 1)


class Soak:
    def __init__(self, args, server_flags: list[str]):
        self.args, self.server_flags = args, server_flags
        self.output: Path = args.output
        self.warmup_s = args.warmup if args.warmup is not None else min(60.0, args.duration / 5)
        self.window_s = args.rss_window if args.rss_window is not None else min(60.0, args.duration / 5)

    def run(self) -> dict:
        from .server_process import RunningServer, free_port, start_server

        a = self.args
        self.output.mkdir(parents=True, exist_ok=True)
        model_dir = self._reference_model_dir()
        say(f"bert-serving-soak: {a.num_client} clients for {a.duration:.0f} s; results in {self.output}")
        if a.running:
            server = RunningServer(process=None, port=a.port, port_out=a.port_out)
            bridge_pid = a.pid or listening_pid(a.port)
            loading = Background(load_reference_model, model_dir)
        else:
            flags = list(self.server_flags)
            if not any(flag in flags for flag in HTTP_PORT_FLAGS):
                flags += ["-http_port", str(free_port()), "-http_max_connect", str(max(10, a.num_client))]
            # The model loads (torch, transformers: seconds) while the service starts.
            loading = Background(load_reference_model, model_dir)
            cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            log = cache / "bert-serving" / "soak" / "server.log"
            say(f"server log: {log}")
            server = start_server(flags, log, ready_timeout_s=a.wait_till_ready)
            bridge_pid = server.pid
        try:
            return self._soak(server, bridge_pid, loading.result())
        finally:
            server.stop()

    def _reference_model_dir(self) -> Path:
        from bert_exporter.options import packaged_model_dir

        if self.args.reference_model_dir:
            return self.args.reference_model_dir
        for i, flag in enumerate(self.server_flags[:-1]):
            if flag in MODEL_DIR_FLAGS:
                return Path(self.server_flags[i + 1])
        return packaged_model_dir()

    def _soak(self, server, bridge_pid: int | None, reference) -> dict:
        from bert_serving.client import BertClient

        a = self.args
        with BertClient(ip=a.ip, port=server.port, port_out=server.port_out, timeout=int(a.timeout * 1000)) as bc:
            config = bc.server_config
        http_port = a.http_port or config.get("http_port")
        sentences = sentence_pool(reference.model_dir / "vocab.txt", a.client_vocab_file, a.num_distinct, a.seed)
        tally = Tally()
        # While transformers computes the references, the service meets its largest shape (max_batch_size rows of
        # the longest sentences): Triton's arenas grow to it before the clock starts, not during the RSS windows.
        longest = np.resize(np.argsort([len(text) for text in sentences])[::-1][:8], config["max_batch_size"])
        warming = Background(self._warm_up, server, sentences, longest)
        started = time.monotonic()
        references = reference.vectors(config, sentences)
        say(f"reference vectors for {len(sentences)} distinct sentences: {time.monotonic() - started:.1f} s")
        checker = Checker(references, a.tolerance)
        warm_up = {"sentences": len(longest), "mismatched_rows": checker.mismatched_rows(warming.result(), longest)}
        clients = SoakClients(num_client=a.num_client, ip=a.ip, port=server.port, port_out=server.port_out,
                              http_port=http_port, sentences=sentences,
                              plan=RequestPlan(pool_size=len(sentences), max_sentences=a.max_request_sentences,
                                               seed=a.seed),
                              checker=checker, timeout_s=a.timeout, seed=a.seed,
                              tally=tally)
        memory = ServiceMemory(bridge_pid) if bridge_pid else None
        progress = Progress(a.duration, tally, memory)
        with memory or contextlib.nullcontext():
            begin = time.monotonic()
            clients.start(stop_at=begin + a.duration)
            while clients.alive():
                progress.show(time.monotonic() - begin)
                time.sleep(1)
            clients.join()
            elapsed = time.monotonic() - begin
        progress.close(elapsed)
        result = self._result(config, clients, tally, memory, elapsed, http_port, bridge_pid, warm_up)
        write(result, self.output)
        print((self.output / "soak.md").read_text())
        return result

    def _warm_up(self, server, sentences: list[str], indices: np.ndarray) -> np.ndarray:
        from bert_serving.client import BertClient

        a = self.args
        with BertClient(ip=a.ip, port=server.port, port_out=server.port_out, timeout=int(a.timeout * 1000),
                        check_length=False) as bc:
            return bc.encode([sentences[i] for i in indices])

    def _result(self, config: dict, clients: SoakClients, tally: Tally, memory, elapsed: float,
                http_port: int | None, bridge_pid: int | None, warm_up: dict) -> dict:
        a = self.args
        rss = growth(memory.samples, warmup_s=self.warmup_s, window_s=self.window_s, end_s=a.duration) \
            if memory else {part: None for part in PARTS}
        totals = {key: tally.total(key) for key in (
            "requests", "sentences", "lost", "lost_sentences", "mismatched_rows", "mismatched_requests", "errors",
            "refused", "abandoned_after_error", "multicast_received", "multicast_mismatched", "multicast_lost")}
        sizes = {}
        for size_class in SIZE_CLASSES:
            latencies = tally.latencies_s.get(size_class.name, [])
            sizes[size_class.name] = {
                "requests": len(latencies),
                "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else None,
                "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else None,
                "max_ms": 1000 * max(latencies) if latencies else None}
        growths = {part: rss[part]["growth"] for part in PARTS if rss[part] and rss[part]["growth"] is not None}
        targets = {
            "lost": totals["lost"] + totals["multicast_lost"] == 0,
            "mismatched": not (totals["mismatched_rows"] or totals["multicast_mismatched"]
                               or warm_up["mismatched_rows"]),
            "unexpected_errors": totals["errors"] == 0,
            "rss_growth": bool(growths) and all(g < a.max_rss_growth for g in growths.values()),
        }
        targets["met"] = all(targets.values())
        return {
            "settings": {"num_client": a.num_client, "duration_s": a.duration, "clients_by_kind":
                         dict(clients.counts_by_kind), "max_request_sentences": a.max_request_sentences,
                         "num_distinct": a.num_distinct, "seed": a.seed, "timeout_s": a.timeout,
                         "tolerance": a.tolerance, "warmup_s": self.warmup_s, "rss_window_s": self.window_s,
                         "max_rss_growth": a.max_rss_growth, "server_flags": self.server_flags,
                         "running": a.running, "http_port": http_port, "bridge_pid": bridge_pid},
            "server": {key: config.get(key) for key in (
                "server_version", "bridge_version", "model_source", "max_seq_len", "pooling_strategy",
                "pooling_layer", "max_batch_size", "priority_batch_size", "num_worker", "output_dim")},
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
            "elapsed_s": elapsed,
            "sentences_per_s": totals["sentences"] / elapsed if elapsed else 0.0,
            "totals": totals,
            "warm_up": warm_up,
            "by_kind": {kind: dict(counts) for kind, counts in sorted(tally.counts.items())},
            "error_types": dict(tally.error_types),
            "error_samples": tally.error_samples,
            "size_classes": sizes,
            "rss": rss,
            "rss_samples_mb": [[round(s.t_s, 1), round(s.bridge_bytes / 2**20, 1), round(s.triton_bytes / 2**20, 1)]
                               for s in (memory.samples if memory else [])],
            "targets": targets,
        }


def load_reference_model(model_dir: Path):
    from .reference_vectors import ReferenceModel

    return ReferenceModel(model_dir)


class Background:
    """``function(*args)`` in a thread; ``result()`` waits and returns it (or raises what it raised)."""

    def __init__(self, function, *args):
        self._value, self._error = None, None

        def run() -> None:
            try:
                self._value = function(*args)
            except BaseException as e:  # handed to result()
                self._error = e

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class Progress:
    """One line on stderr, rewritten each second on a terminal; a line every 10 s otherwise (logs, tests)."""

    def __init__(self, duration_s: float, tally: Tally, memory):
        self.duration_s, self.tally, self.memory = duration_s, tally, memory
        self.tty = sys.stderr.isatty()
        self._last_line = -10.0

    def show(self, t_s: float) -> None:
        if not self.tty and t_s - self._last_line < 10:
            return
        self._last_line = t_s
        t = self.tally
        phase = f"{t_s:5.0f}/{self.duration_s:.0f} s" if t_s <= self.duration_s else f"{t_s:5.0f} s draining"
        sample = self.memory.latest() if self.memory else None
        rss = (f"  RSS bridge {sample.bridge_bytes / 2**20:.0f} MB, triton {sample.triton_bytes / 2**20:.0f} MB"
               if sample else "")
        line = (f"{phase}  requests {t.total('requests')}  sentences/s {t.total('sentences') / max(t_s, 1e-9):.0f}"
                f"  lost {t.total('lost') + t.total('multicast_lost')}"
                f"  mismatched {t.total('mismatched_rows') + t.total('multicast_mismatched')}"
                f"  errors {t.total('errors')}  refused {t.total('refused')}{rss}")
        sys.stderr.write(f"\r{line:<150}" if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self, t_s: float) -> None:
        self._last_line = -10.0
        self.show(t_s)
        if self.tty:
            sys.stderr.write("\n")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def write(result: dict, output: Path) -> None:
    text = json.dumps(result, indent=2)
    # One line per RSS sample (t, bridge, triton), not three: a ten-minute run has 600 of them.
    text = re.sub(r"\[\s*([-0-9.e]+),\s*([-0-9.e]+),\s*([-0-9.e]+)\s*\]", r"[\1, \2, \3]", text)
    (output / "soak.json").write_text(text + "\n")
    (output / "soak.md").write_text(markdown(result) + "\n")


def markdown(r: dict) -> str:
    s, t = r["settings"], r["totals"]

    def mark(ok: bool) -> str:
        return "met" if ok else "**missed**"

    kinds = ", ".join(f"{n} {kind}" for kind, n in s["clients_by_kind"].items())
    lines = [
        f"{s['num_client']} clients ({kinds}) for {s['duration_s']:.0f} s against "
        f"{'a running service' if s['running'] else 'bert-serving-start ' + ' '.join(s['server_flags'])}"
        f" (max_seq_len {r['server']['max_seq_len']}, max_batch_size {r['server']['max_batch_size']}); "
        f"{r['machine']}; {r['elapsed_s']:.0f} s with the drain.", "",
        "| target | measured | |", "|---|---|---|",
        f"| 0 lost replies (timeout {s['timeout_s']:.0f} s) | {t['lost']} lost ({t['lost_sentences']} sentences), "
        f"{t['multicast_lost']} multicast copies missing | {mark(r['targets']['lost'])} |",
        f"| 0 mismatched rows (max abs difference > {s['tolerance']:g} from transformers) | "
        f"{t['mismatched_rows']} rows in {t['mismatched_requests']} replies, {t['multicast_mismatched']} multicast "
        f"copies, {r['warm_up']['mismatched_rows']} in the warm-up | {mark(r['targets']['mismatched'])} |",
        f"| 0 unexpected errors | {t['errors']} (refused as overloaded: {t['refused']}) | "
        f"{mark(r['targets']['unexpected_errors'])} |",
    ]
    for part in PARTS:
        g = r["rss"].get(part)
        if g and g["growth"] is not None:
            first = f"s {s['warmup_s']:.0f}-{s['warmup_s'] + s['rss_window_s']:.0f}"
            lines.append(f"| {part} RSS growth after warm-up < {s['max_rss_growth']:.0%} | {g['growth']:+.1%} "
                         f"({g['first_window_mb']:.0f} MB in {first}, {g['last_window_mb']:.0f} MB in the last "
                         f"{s['rss_window_s']:.0f} s; peak "
                         f"{g['peak_mb']:.0f} MB) | {mark(g['growth'] < s['max_rss_growth'])} |")
        else:
            lines.append(f"| {part} RSS growth after warm-up < {s['max_rss_growth']:.0%} | not measured | "
                         f"{mark(False)} |")
    lines += [
        "", f"{t['requests']} requests answered, {t['sentences']} sentences, {r['sentences_per_s']:.1f} sentences/s; "
        f"{t['multicast_received']} replies also received by clones.", "",
        "| request size (sentences) | requests | p50 latency ms | p99 latency ms | max ms |",
        "|---|---:|---:|---:|---:|"]
    for name, c in r["size_classes"].items():
        lines.append(f"| {name} | {c['requests']} | " + " | ".join(
            f"{c[key]:.0f}" if c[key] is not None else "-" for key in ("p50_ms", "p99_ms", "max_ms")) + " |")
    lines += ["", "| client kind | requests | sentences | lost | mismatched rows | errors | refused |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for kind, c in r["by_kind"].items():
        lines.append(f"| {kind} | {c.get('requests', 0)} | {c.get('sentences', 0)} | {c.get('lost', 0)} | "
                     f"{c.get('mismatched_rows', 0)} | {c.get('errors', 0)} | {c.get('refused', 0)} |")
    if r["error_samples"]:
        lines += ["", "Errors (first few):", ""] + [f"- {e}" for e in r["error_samples"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
