"""``bert-serving-benchmark``: the original's five scalability tables, with baselines and ratios, in one command.

For every setting it starts its own ``bert-serving-start`` (bridge + embedded tritonserver; the original's server
flags pass through), waits until it is ready, runs the original's client load (``-num_repeat`` counted requests per
client after one warm-up) and records sentences/s, p50/p90/p99 latency and the peak RSS of the whole service. Then,
on the same sentences and machine, it measures onnxruntime in process on the same ONNX file and
sentence-transformers ``encode``, Triton alone with perf_analyzer, int8 against fp32, and length-adaptive padding
against padding to max_seq_len. It writes results.csv, tables.md, summary.md (ratios first) and PNG plots.
``-running`` measures a server that is already up (-ip/-port/-port_out) with the client-side tables only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import report
from .client_load import LoadResult, run_load
from .process_memory import PeakRss
from .server_process import RunningServer, free_port, start_server
from .workload import HELD_OUT_MULTILINGUAL, SentenceMaker

TABLES = ("max_seq_len", "client_batch_size", "num_client", "max_batch_size", "pooling_layer")
COMPARE_TOKENS = 42  # the workload: sentences of ~42 tokens
MIXED_RANGE = (5, 128)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bert-serving-benchmark", description=__doc__.splitlines()[0],
        epilog="Any other flag (e.g. -num_worker 2, -model_dir DIR) is passed to every bert-serving-start.")
    test = parser.add_argument_group("the original's benchmark parameters")
    test.add_argument("-test_client_batch_size", type=int, nargs="+", default=[1, 16, 256, 1024])
    test.add_argument("-test_max_batch_size", type=int, nargs="+", default=[32, 64, 128, 256])
    test.add_argument("-test_max_seq_len", type=int, nargs="+", default=[20, 40, 80, 160, 320])
    test.add_argument("-test_num_client", type=int, nargs="+", default=[1, 2, 4, 8])
    test.add_argument("-test_pooling_layer", type=int, nargs="+", default=[-1, -2, -4, -6])
    test.add_argument("-num_repeat", type=int, default=2, help="counted requests per client (after one warm-up)")
    test.add_argument("-client_vocab_file", type=Path, default=Path("README.md"),
                      help="words of the benchmark sentences (the original's default: README.md)")
    test.add_argument("-wait_till_ready", type=float, default=600, help="seconds a server may take to be ready")
    common = parser.add_argument_group("the common setting (every table varies one of these)")
    common.add_argument("-common_max_seq_len", type=int, default=40)
    common.add_argument("-common_client_batch_size", type=int, default=256)
    common.add_argument("-common_max_batch_size", type=int, default=256)
    common.add_argument("-common_pooling_layer", type=int, default=-2)
    extra = parser.add_argument_group("beyond the original")
    extra.add_argument("-model", choices=["minilm", "bert-base"], default="minilm",
                       help="the packaged MiniLM, or a BERT-base shape with random weights written here")
    extra.add_argument("-skip", nargs="*", default=[],
                       choices=["int8", "baselines", "perf_analyzer", "padding", "tables"],
                       help="parts to leave out")
    extra.add_argument("-running", action="store_true",
                       help="measure the server at -ip/-port/-port_out (client tables only) instead of starting one")
    extra.add_argument("-ip", default="localhost")
    extra.add_argument("-port", type=int, default=5555)
    extra.add_argument("-port_out", type=int, default=5556)
    extra.add_argument("-output", type=Path, default=Path("bench/results"), help="folder for the result files")
    extra.add_argument("-work_dir", type=Path, default=None,
                       help="exports and logs (default: $XDG_CACHE_HOME/bert-serving/bench); exports are reused")
    return parser


class Progress:
    """One line on stderr: a bar, the step count and what runs now."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.monotonic()

    def step(self, label: str) -> None:
        self.done += 1
        filled = int(30 * self.done / max(self.total, self.done))
        minutes = (time.monotonic() - self.started) / 60
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {minutes:4.1f} min "
                         f"{label[:60]:<60}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


class Benchmark:
    def __init__(self, args, server_flags: list[str]):
        self.args = args
        self.server_flags = server_flags
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bert-serving" / "bench"
        self.work = (args.work_dir or cache).resolve()
        self.models = self.work / "models"
        self.output = args.output
        self.output.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.facts: dict = {}
        self.source = self._source_model()
        self.maker = SentenceMaker(self.source / "vocab.txt", args.client_vocab_file)
        self.peak_rss = 0

    # --- models ----------------------------------------------------------------------------------------------------

    def _source_model(self) -> Path:
        from bert_exporter.options import packaged_model_dir

        if "-model_dir" in self.server_flags:
            return Path(self.server_flags[self.server_flags.index("-model_dir") + 1])
        if self.args.model == "minilm":
            return packaged_model_dir()
        return write_bert_base(self.work / "bert-base-random", packaged_model_dir() / "vocab.txt")

    def export(self, name: str, *flags: str) -> Path:
        """The source exported with these flags, reused while the exporter's code is unchanged."""
        from bert_bridge.model_source import exporter_code_digest

        folder = self.models / f"{name}_{exporter_code_digest()[:8]}"
        if (folder / "bert_export.json").is_file():
            return folder
        command = [sys.executable, "-m", "bert_exporter.cli", "-model_dir", str(self.source), "-output",
                   str(self.models), "-name", folder.name, "-max_seq_len", "128", *flags]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bert-serving-benchmark: bert-export {' '.join(flags)} failed: {done.stderr.strip()}")
        return folder

    # --- measuring -------------------------------------------------------------------------------------------------

    @contextmanager
    def serve(self, folder: Path, *flags: str):
        passthrough = [f for i, f in enumerate(self.server_flags)
                       if f != "-model_dir" and (i == 0 or self.server_flags[i - 1] != "-model_dir")]
        log = self.work / "logs" / f"{folder.name}-{'_'.join(f.strip('-') for f in flags)}.log"
        server = start_server(["-model_dir", str(folder), *flags, *passthrough], log,
                              ready_timeout_s=self.args.wait_till_ready)
        try:
            with PeakRss(server.pid) as peak:
                yield server
        finally:
            server.stop()
            self.peak_rss = max(self.peak_rss, peak.bytes)
            self.last_peak_rss = peak.bytes

    def measure(self, server: RunningServer, table: str, value, sentences: list[str], num_client: int = 1,
                repeats: int | None = None) -> LoadResult:
        result = run_load(server.port, server.port_out, sentences, num_client=num_client,
                          repeats=repeats or self.args.num_repeat, ip=self.args.ip)
        self.record(table, value, result, num_client)
        return result

    def record(self, table: str, value, result: LoadResult, num_client: int = 1) -> None:
        self.rows.append({
            "table": table, "value": value, "sentences_per_s": result.sentences_per_s,
            "per_client_sentences_per_s": result.sentences_per_s / num_client,
            "p50_ms": result.percentile_ms(50), "p90_ms": result.percentile_ms(90),
            "p99_ms": result.percentile_ms(99), "peak_rss_mb": 0.0, "errors": "; ".join(result.errors[:2])})

    def _set_rss(self, count: int) -> None:
        """The peak RSS of the server that just stopped, on its last ``count`` rows."""
        for row in self.rows[-count:]:
            row["peak_rss_mb"] = self.last_peak_rss / 2**20

    def repeats_for(self, batch: int) -> int:
        """Small batches repeat more, so each point counts at least ~256 sentences (at most 200 requests)."""
        return max(self.args.num_repeat, min(200, 256 // max(batch, 1)))

    # --- the parts -------------------------------------------------------------------------------------------------

    def run(self) -> None:
        a = self.args
        skip = set(a.skip)
        layer = str(a.common_pooling_layer)
        server_tables = sum(len([v for v in values if v != common_value]) for values, common_value in (
            (a.test_max_seq_len, a.common_max_seq_len), (a.test_max_batch_size, a.common_max_batch_size),
            (a.test_pooling_layer, a.common_pooling_layer)))
        steps = 1 + (0 if "tables" in skip else server_tables) + (0 if "padding" in skip else 2) \
            + sum(part not in skip for part in ("int8", "baselines", "perf_analyzer"))
        progress = Progress(steps)
        common = a.common_client_batch_size
        fp32 = self.export(f"fp32_l{layer}", "-pooling_layer", layer)
        compare = self.maker.sentences(common, COMPARE_TOKENS)
        held_out = list(HELD_OUT_MULTILINGUAL)
        base = ["-max_batch_size", str(a.common_max_batch_size)]
        try:
            # The common server: the client-side tables, the comparison workload and single sentences.
            progress.step("common setting: client_batch_size and num_client tables")
            with self.serve(fp32, "-max_seq_len", str(a.common_max_seq_len), *base) as server:
                fp32_compare = self.measure(server, "compare", "service fp32, max_seq_len "
                                            f"{a.common_max_seq_len}", compare)
                self.measure(server, "compare", "service, one sentence", compare[:1], repeats=100)
                fp32_held_out = run_load(server.port, server.port_out, held_out, num_client=1, repeats=1).vectors
                if "tables" not in skip:
                    for batch in a.test_client_batch_size:
                        sentences = self.maker.sentences(batch, a.common_max_seq_len)
                        self.measure(server, "client_batch_size", batch, sentences, repeats=self.repeats_for(batch))
                    sentences = self.maker.sentences(common, a.common_max_seq_len)
                    for clients in a.test_num_client:
                        self.measure(server, "num_client", clients, sentences, num_client=clients)
                    self.measure(server, "max_seq_len", a.common_max_seq_len, sentences)
                    self.measure(server, "max_batch_size", a.common_max_batch_size, sentences)
                    self.measure(server, "pooling_layer", a.common_pooling_layer, sentences)
                counted = len(self.rows)
            self._set_rss(counted)
            if "tables" not in skip:
                self._server_tables(progress, fp32, base)
            if "padding" not in skip:
                self._padding(progress, fp32, base, compare)
            if "int8" not in skip:
                progress.step("int8 export and service")
                int8 = self.export(f"int8_l{layer}", "-pooling_layer", layer, "-quantize", "int8")
                self.facts["int8_export_worst_cosine"] = json.loads(
                    (int8 / "bert_export.json").read_text())["extra"]["quantize_worst_cosine"]
                with self.serve(int8, "-max_seq_len", str(a.common_max_seq_len), *base) as server:
                    int8_compare = self.measure(server, "compare", f"service int8, max_seq_len "
                                                f"{a.common_max_seq_len}", compare)
                    int8_held_out = run_load(server.port, server.port_out, held_out, num_client=1, repeats=1).vectors
                self._set_rss(1)
                self.facts["int8_speedup"] = int8_compare.sentences_per_s / fp32_compare.sentences_per_s
                self.facts["int8_held_out_worst_cosine"] = worst_cosine(fp32_held_out, int8_held_out)
            if "perf_analyzer" not in skip:
                progress.step("perf_analyzer on Triton alone")
                self._perf_analyzer(fp32, compare)
            if "baselines" not in skip:
                progress.step("baselines in process: onnxruntime, sentence-transformers")
                self._baselines(fp32, compare, fp32_compare)
        finally:
            progress.close()
            self.facts["peak_rss_mb"] = self.peak_rss / 2**20
            self.write()

    def _server_tables(self, progress: Progress, fp32: Path, base: list[str]) -> None:
        a = self.args
        common = a.common_client_batch_size
        for length in a.test_max_seq_len:
            if length == a.common_max_seq_len:
                continue
            progress.step(f"max_seq_len {length}")
            with self.serve(fp32, "-max_seq_len", str(length), *base) as server:
                self.measure(server, "max_seq_len", length, self.maker.sentences(common, length))
            self._set_rss(1)
        sentences = self.maker.sentences(common, a.common_max_seq_len)
        for size in a.test_max_batch_size:
            if size == a.common_max_batch_size:
                continue
            progress.step(f"max_batch_size {size}")
            with self.serve(fp32, "-max_seq_len", str(a.common_max_seq_len), "-max_batch_size", str(size)) as server:
                self.measure(server, "max_batch_size", size, sentences)
            self._set_rss(1)
        for layer in a.test_pooling_layer:
            if layer == a.common_pooling_layer:
                continue
            progress.step(f"pooling_layer {layer} (export)")
            folder = self.export(f"fp32_l{layer}", "-pooling_layer", str(layer))
            with self.serve(folder, "-max_seq_len", str(a.common_max_seq_len), *base) as server:
                self.measure(server, "pooling_layer", layer, sentences)
            self._set_rss(1)

    def _padding(self, progress: Progress, fp32: Path, base: list[str], compare: list[str]) -> None:
        mixed = self.maker.mixed(self.args.common_client_batch_size, *MIXED_RANGE)
        progress.step("max_seq_len 128, adaptive padding")
        with self.serve(fp32, "-max_seq_len", "128", *base) as server:
            self.measure(server, "compare", "service fp32, max_seq_len 128", compare)
            adaptive = self.measure(server, "compare", "mixed 5..128, adaptive padding", mixed)
        self._set_rss(2)
        progress.step("max_seq_len 128, padding to max_seq_len")
        with self.serve(fp32, "-max_seq_len", "128", "-pad_to_max_seq_len", *base) as server:
            padded = self.measure(server, "compare", "mixed 5..128, padding to 128", mixed)
        self._set_rss(1)
        self.facts["adaptive_vs_padded_max_abs"] = float(np.abs(adaptive.vectors - padded.vectors).max())

    def _baselines(self, fp32: Path, compare: list[str], service: LoadResult) -> None:
        from .baselines import OnnxRuntimeBaseline, SentenceTransformersBaseline

        length = self.args.common_max_seq_len
        ort = OnnxRuntimeBaseline(fp32, max_seq_len=length)
        self.record("compare", f"onnxruntime in process, max_seq_len {length}",
                    ort.measure(compare, self.args.num_repeat))
        self.record("compare", "onnxruntime in process, one sentence", ort.measure(compare[:1], 100))
        st = SentenceTransformersBaseline(self.source, max_seq_len=length, threads=os.cpu_count() or 1)
        # Its vectors differ by design (its own pooling layer and Normalize); only its speed is compared.
        self.record("compare", f"sentence-transformers encode, max_seq_len {length}",
                    st.measure(compare, self.args.num_repeat))
        ort_vectors = ort.encode(compare)
        self.facts["service_vs_onnxruntime_max_abs"] = float(np.abs(service.vectors - ort_vectors).max())

    def _perf_analyzer(self, fp32: Path, compare: list[str]) -> None:
        from . import perf_analyzer
        from bert_bridge.tokenization import TokenizerSettings, WordPieceTokenizer, pad

        binary = perf_analyzer.find_binary()
        if binary is None:
            self.facts["perf_analyzer"] = "not installed (make install puts it in .venv/perf-analyzer)"
            return
        tokenizer = WordPieceTokenizer(TokenizerSettings(vocab_file=fp32 / "vocab.txt", do_lower_case=True,
                                                         max_seq_len=self.args.common_max_seq_len,
                                                         max_position_embeddings=512))
        ids, mask, segments = pad(tokenizer.encode(compare), self.args.common_max_seq_len)
        data = self.work / "perf-input.json"
        perf_analyzer.write_input_data(data, ids, mask, segments)
        grpc_port = free_port()
        log = open(self.work / "logs" / "perf-triton.log", "wb")
        triton = subprocess.Popen([sys.executable, "-m", "bert_bridge.standalone_triton", "--model-repository",
                                   str(self.models), "--model", fp32.name, "--grpc-port", str(grpc_port),
                                   "--http-port", str(free_port()), "--metrics-port", str(free_port()),
                                   "--cache-dir", str(self.work / "triton")], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_grpc(f"localhost:{grpc_port}", fp32.name, triton, self.args.wait_till_ready)
            rows = perf_analyzer.run(binary, work=self.work, grpc_url=f"localhost:{grpc_port}", model=fp32.name,
                                     input_data=data, batch_size=32, concurrency=(1, 4, 3))
            self.facts["perf_analyzer"] = rows
        except Exception as e:  # the tables stand without it
            self.facts["perf_analyzer"] = f"failed: {e}"
        finally:
            triton.terminate()
            triton.wait(30)
            log.close()

    # --- output ----------------------------------------------------------------------------------------------------

    def write(self) -> None:
        report.write_csv(self.rows, self.output / "results.csv")
        sections = []
        for table in TABLES:
            rows = sorted((r for r in self.rows if r["table"] == table), key=lambda r: _order(table, r["value"]))
            if rows:
                sections.append(f"### Speed wrt. {table}\n\n{report.markdown_table(rows, table)}")
                report.plot(rows, f"speed wrt. {table}", table, self.output / f"{table}.png")
        compare = [r for r in self.rows if r["table"] == "compare"]
        if compare:
            sections.insert(0, "### Side by side (same sentences, same machine, one run)\n\n"
                            + report.markdown_table(compare, "what"))
        (self.output / "tables.md").write_text("\n\n".join(sections) + "\n")
        (self.output / "summary.md").write_text(self.summary() + "\n")
        (self.output / "facts.json").write_text(json.dumps(self.facts, indent=2, default=str) + "\n")
        print((self.output / "summary.md").read_text())
        print(f"wrote {self.output}/summary.md, tables.md, results.csv, facts.json and the plots")

    def summary(self) -> str:
        speed = {r["value"]: r for r in self.rows if r["table"] == "compare"}
        length = self.args.common_max_seq_len

        def ratio(a: str, b: str, field: str = "sentences_per_s") -> str:
            if a in speed and b in speed and speed[b][field]:
                return f"{speed[a][field] / speed[b][field]:.2f}x ({speed[a][field]:.1f} / {speed[b][field]:.1f})"
            return "not measured"

        f = self.facts
        lines = [
            "## Ratios (measured in this run)", "",
            f"- service fp32 / onnxruntime in process (max_seq_len {length}): "
            + ratio(f"service fp32, max_seq_len {length}", f"onnxruntime in process, max_seq_len {length}"),
            f"- service fp32 / sentence-transformers in process: "
            + ratio(f"service fp32, max_seq_len {length}", f"sentence-transformers encode, max_seq_len {length}"),
            f"- service at max_seq_len 128 / at {length} (same ~{COMPARE_TOKENS}-token sentences): "
            + ratio("service fp32, max_seq_len 128", f"service fp32, max_seq_len {length}"),
            "- mixed lengths 5..128, adaptive padding / padding to 128: "
            + ratio("mixed 5..128, adaptive padding", "mixed 5..128, padding to 128")
            + (f"; vectors max abs difference {f['adaptive_vs_padded_max_abs']:.2e}"
               if "adaptive_vs_padded_max_abs" in f else ""),
            "- int8 / fp32 service: " + ratio(f"service int8, max_seq_len {length}", f"service fp32, max_seq_len {length}")
            + (f"; worst cosine on the held-out multilingual set {f['int8_held_out_worst_cosine']:.4f}, "
               f"on the export's check set {f['int8_export_worst_cosine']:.4f}" if "int8_speedup" in f else ""),
            "- one sentence, p50 latency service / onnxruntime in process: "
            + ratio("service, one sentence", "onnxruntime in process, one sentence", "p50_ms"),
            f"- peak RSS of the whole service (bridge + tritonserver + python stub), all settings: "
            f"{f.get('peak_rss_mb', 0):.0f} MB",
        ]
        if isinstance(f.get("perf_analyzer"), list):
            lines += ["", "## Triton alone (perf_analyzer, batch 32, "
                      f"{self.args.common_max_seq_len} tokens, gRPC)", "",
                      "| concurrency | sentences/s | p50 ms | p99 ms | server queue ms | server compute ms |",
                      "|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {r['concurrency']} | {r['inferences_per_s']:.1f} | {r['p50_us'] / 1000:.1f} | "
                      f"{r['p99_us'] / 1000:.1f} | {r['server_queue_us'] / 1000:.1f} | "
                      f"{r['server_compute_us'] / 1000:.1f} |" for r in f["perf_analyzer"]]
        elif "perf_analyzer" in f:
            lines += ["", f"perf_analyzer: {f['perf_analyzer']}"]
        return "\n".join(lines)


def _order(table: str, value):
    return -value if table == "pooling_layer" else value


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    dot = (a * b).sum(axis=1)
    return float((dot / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def wait_for_grpc(url: str, model: str, process: subprocess.Popen, timeout_s: float) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if client.is_model_ready(model):
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise RuntimeError(f"tritonserver for perf_analyzer not ready within {timeout_s:.0f}s")


def write_bert_base(folder: Path, vocab_file: Path) -> Path:
    """A BERT-base shape (12 layers, 768 wide) with random weights, as a Hugging Face folder."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig()).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    shutil.copy(vocab_file, folder / "vocab.txt")
    return folder


def run_running(args) -> None:
    """Client-side tables against a server someone else started."""
    bench = Benchmark.__new__(Benchmark)
    bench.args, bench.rows, bench.facts, bench.output = args, [], {}, args.output
    bench.output.mkdir(parents=True, exist_ok=True)
    from bert_exporter.options import packaged_model_dir

    bench.maker = SentenceMaker(packaged_model_dir() / "vocab.txt", args.client_vocab_file)
    server = RunningServer(process=None, port=args.port, port_out=args.port_out)
    for batch in args.test_client_batch_size:
        bench.measure(server, "client_batch_size", batch, bench.maker.sentences(batch, args.common_max_seq_len),
                      repeats=bench.repeats_for(batch))
    sentences = bench.maker.sentences(args.common_client_batch_size, args.common_max_seq_len)
    for clients in args.test_num_client:
        bench.measure(server, "num_client", clients, sentences, num_client=clients)
    bench.write()


def main(argv=None) -> None:
    args, server_flags = build_parser().parse_known_args(argv)
    if args.running:
        run_running(args)
    else:
        Benchmark(args, server_flags).run()


if __name__ == "__main__":
    main()
