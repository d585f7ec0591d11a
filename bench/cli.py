"""``bert-serving-benchmark``: the original's five scalability tables, with baselines and ratios, in one command.

For every setting it starts its own ``bert-serving-start`` (bridge + embedded tritonserver; the original's server
flags pass through), waits until it is ready, runs the original's client load (``-num_repeat`` counted requests per
client after one warm-up) and records sentences/s, p50/p90/p99 latency and the peak RSS of the whole service. Then,
on the same sentences and machine, it compares the service with onnxruntime in process on the same ONNX file and
sentence-transformers ``encode``, int8 with fp32, max_seq_len 128 with 40, and length-adaptive padding with padding
to max_seq_len -- each pair taking turns request by request (bench/paired.py) -- and measures Triton alone with
perf_analyzer. It writes results.csv, tables.md, summary.md (ratios first) and PNG plots.
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
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from . import long_context, report
from .client_load import LoadResult, run_load
from .paired import service_encoder, take_turns
from .process_memory import PeakRss
from .server_process import RunningServer, free_port, start_server
from .workload import HELD_OUT_MULTILINGUAL, SentenceMaker

TABLES = ("max_seq_len", "client_batch_size", "num_client", "max_batch_size", "pooling_layer")
# int8 beside fp32 for the configurations people serve (issue 23): the common setting, the last layer, AUTO.
DEFAULT_FLAGS = "default flags"
INT8_CONFIGURATIONS = ((DEFAULT_FLAGS, ()), ("-pooling_layer -1", ("-pooling_layer", "-1")),
                       ("AUTO", ("-pooling_strategy", "AUTO")))
COMPARE_TOKENS = 42  # the workload: sentences of ~42 tokens
MIXED_RANGE = (5, 128)
FITTING_SPREAD = 7  # Done-when 2c's sentences: from common_max_seq_len - 7 to common_max_seq_len tokens


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
    test.add_argument("-compare_rounds", type=int, default=10,
                      help="rounds of the paired comparisons (service beside baselines, int8, padding)")
    test.add_argument("-client_vocab_file", type=Path, default=Path("README.md"),
                      help="words of the benchmark sentences (the original's default: README.md)")
    test.add_argument("-wait_till_ready", type=float, default=600, help="seconds a server may take to be ready")
    common = parser.add_argument_group("the common setting (every table varies one of these)")
    common.add_argument("-common_max_seq_len", type=int, default=40)
    common.add_argument("-common_client_batch_size", type=int, default=256)
    common.add_argument("-common_max_batch_size", type=int, default=256)
    common.add_argument("-common_pooling_layer", type=int, default=-2)
    extra = parser.add_argument_group("beyond the original")
    extra.add_argument("-model", choices=["minilm", "bert-base", "xlmr-base", "modernbert-base"], default="minilm",
                       help="the packaged MiniLM, or a BERT-base shape with random weights written here; xlmr-base: "
                            "a 12-layer, 768-wide XLM-R with random weights timed in process beside BERT-base; "
                            "modernbert-base: a ModernBERT-base shape at 512 to 8,192 tokens instead of the tables "
                            "(bench/long_context.py)")
    long_context.add_arguments(extra)
    extra.add_argument("-skip", nargs="*", default=[],
                       choices=["int8", "baselines", "reference", "perf_analyzer", "padding", "tables"],
                       help="parts to leave out")
    extra.add_argument("-running", action="store_true",
                       help="measure the server at -ip/-port/-port_out (client tables only) instead of starting one")
    extra.add_argument("-rerank", action="store_true",
                       help="instead of the tables: documents/s reranking passages with a cross-encoder of "
                            "ms-marco-MiniLM-L6's shape, the service beside CrossEncoder.predict (bench/rerank.py)")
    extra.add_argument("-rerank_documents", type=int, default=1000, help="passages per rerank request")
    extra.add_argument("-rerank_tokens", type=int, default=60, help="tokens per passage")
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
        self.work = work_dir(args)
        self.models = self.work / "models"
        self.output = args.output
        self.output.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.facts: dict = {}
        self.source = self._source_model()
        self.maker = SentenceMaker(self.source / "vocab.txt", args.client_vocab_file)
        self.peak_rss = 0
        self.peaks: dict[int, PeakRss] = {}  # per server port, for its rows' peak RSS

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
                self.peaks[server.port] = peak
                yield server
        finally:
            server.stop()
            self.peak_rss = max(self.peak_rss, peak.bytes)

    def measure(self, server: RunningServer, table: str, value, sentences: list[str], num_client: int = 1,
                repeats: int | None = None) -> LoadResult:
        result = run_load(server.port, server.port_out, sentences, num_client=num_client,
                          repeats=repeats or self.args.num_repeat, ip=self.args.ip)
        self.record(table, value, result, num_client, server)
        return result

    def record(self, table: str, value, result: LoadResult, num_client: int = 1,
               server: RunningServer | None = None) -> None:
        """One row; a server's row gets that server's peak RSS once it has stopped (see write)."""
        self.rows.append({
            "table": table, "value": value, "sentences_per_s": result.sentences_per_s,
            "per_client_sentences_per_s": result.sentences_per_s / num_client,
            "p50_ms": result.percentile_ms(50), "p90_ms": result.percentile_ms(90),
            "p99_ms": result.percentile_ms(99), "peak_rss_mb": 0.0, "errors": "; ".join(result.errors[:2]),
            "peak": self.peaks.get(server.port) if server is not None else None})

    def compare(self, contenders: dict, sentences: list[str], rounds: int | None = None) -> dict[str, LoadResult]:
        """Contenders (name: (encode, server or None)) take turns on the same sentences (bench/paired.py)."""
        results = take_turns({name: encode for name, (encode, _) in contenders.items()}, sentences,
                             rounds or self.args.compare_rounds)
        for name, (_, server) in contenders.items():
            self.record("compare", name, results[name], server=server)
        return results

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
        reference = None if "reference" in skip else self._reference_graph()
        steps = 2 + (0 if "tables" in skip else server_tables) + (0 if "padding" in skip else 2) \
            + sum(part not in skip for part in ("int8", "perf_analyzer")) + (reference is not None)
        progress = Progress(steps)
        common, length = a.common_client_batch_size, a.common_max_seq_len
        fp32 = self.export(f"fp32_l{layer}", "-pooling_layer", layer)
        compare = self.maker.sentences(common, COMPARE_TOKENS)
        base = ["-max_batch_size", str(a.common_max_batch_size)]
        try:
            if reference is not None:
                progress.step("the exported graph beside the reference graph in process")
                self._graph_ratios(fp32, reference)
            with ExitStack() as servers:
                # The common server: the client-side tables, then every comparison, paired (bench/paired.py).
                progress.step("common setting: client_batch_size and num_client tables")
                server = servers.enter_context(self.serve(fp32, "-max_seq_len", str(length), *base))
                if "tables" not in skip:
                    self._client_tables(server)
                service = (servers.enter_context(service_encoder(server, self.args.ip)), server)
                progress.step("service beside onnxruntime and sentence-transformers in process")
                self._baselines(fp32, compare, service, with_baselines="baselines" not in skip, reference=reference)
                if "int8" not in skip:
                    progress.step("int8 export, service beside fp32")
                    self._int8(servers, compare, service)
                if "padding" not in skip:
                    progress.step("max_seq_len 128 beside 40")
                    self._generous_max_seq_len(servers, fp32, base, compare, service)
                    progress.step("mixed lengths: adaptive padding beside padding to 128")
                    self._padding(servers, fp32, base)
            if "tables" not in skip:
                self._server_tables(progress, fp32, base)
            if "perf_analyzer" not in skip:
                progress.step("perf_analyzer on Triton alone")
                self._perf_analyzer(fp32, compare)
        finally:
            progress.close()
            self.facts["peak_rss_mb"] = self.peak_rss / 2**20
            self.write()

    def _client_tables(self, server: RunningServer) -> None:
        a = self.args
        for batch in a.test_client_batch_size:
            sentences = self.maker.sentences(batch, a.common_max_seq_len)
            self.measure(server, "client_batch_size", batch, sentences, repeats=self.repeats_for(batch))
        sentences = self.maker.sentences(a.common_client_batch_size, a.common_max_seq_len)
        for clients in a.test_num_client:
            self.measure(server, "num_client", clients, sentences, num_client=clients)
        self.measure(server, "max_seq_len", a.common_max_seq_len, sentences)
        self.measure(server, "max_batch_size", a.common_max_batch_size, sentences)
        self.measure(server, "pooling_layer", a.common_pooling_layer, sentences)

    def _server_tables(self, progress: Progress, fp32: Path, base: list[str]) -> None:
        a = self.args
        common = a.common_client_batch_size
        for length in a.test_max_seq_len:
            if length == a.common_max_seq_len:
                continue
            progress.step(f"max_seq_len {length}")
            with self.serve(fp32, "-max_seq_len", str(length), *base) as server:
                self.measure(server, "max_seq_len", length, self.maker.sentences(common, length))
        sentences = self.maker.sentences(common, a.common_max_seq_len)
        for size in a.test_max_batch_size:
            if size == a.common_max_batch_size:
                continue
            progress.step(f"max_batch_size {size}")
            with self.serve(fp32, "-max_seq_len", str(a.common_max_seq_len), "-max_batch_size", str(size)) as server:
                self.measure(server, "max_batch_size", size, sentences)
        for layer in a.test_pooling_layer:
            if layer == a.common_pooling_layer:
                continue
            progress.step(f"pooling_layer {layer} (export)")
            folder = self.export(f"fp32_l{layer}", "-pooling_layer", str(layer))
            with self.serve(folder, "-max_seq_len", str(a.common_max_seq_len), *base) as server:
                self.measure(server, "pooling_layer", layer, sentences)

    def _reference_graph(self) -> Path | None:
        """The reference graph for the fp32 export's pooling (bench/reference_graph.py), or None without torch."""
        from . import reference_graph

        if not reference_graph.available():
            self.facts["reference"] = "not measured: torch and transformers are not installed (the test extras)"
            return None
        layer = self.args.common_pooling_layer
        return reference_graph.build_reference(self.source, self.work / "reference" / f"mean_l{layer}",
                                               pooling_layer=layer)

    def _graph_ratios(self, fp32: Path, reference: Path) -> None:
        from . import reference_graph
        from bert_exporter.manifest import ExportManifest

        vocab_size = ExportManifest.load(fp32).extra.get("vocab_size", 20000)
        self.facts["graph_vs_reference"] = reference_graph.graph_ratios(
            fp32 / "1" / "model.onnx", reference, rounds=max(3, 3 * self.args.compare_rounds), vocab_size=vocab_size)

    def _baselines(self, fp32: Path, compare: list[str], service, *, with_baselines: bool,
                   reference: Path | None = None) -> None:
        from .baselines import OnnxRuntimeBaseline, SentenceTransformersBaseline

        length = self.args.common_max_seq_len
        if not with_baselines:
            self.compare({f"service fp32, max_seq_len {length}": service}, compare)
            self.compare({"service, one sentence": service}, compare[:1], rounds=100)
            return
        ort = OnnxRuntimeBaseline(fp32, max_seq_len=length)
        st = SentenceTransformersBaseline(self.source, max_seq_len=length, threads=os.cpu_count() or 1)
        contenders = {f"service fp32, max_seq_len {length}": service,
                      f"onnxruntime in process, max_seq_len {length}": (ort.encode, None)}
        if reference is not None:  # the same tokens and chunks through the reference graph
            contenders[f"reference graph in process, max_seq_len {length}"] = (
                OnnxRuntimeBaseline(fp32, max_seq_len=length, onnx_file=reference).encode, None)
        # sentence-transformers' vectors differ by design (its own pooling layer and Normalize): speed only.
        contenders[f"sentence-transformers encode, max_seq_len {length}"] = (st.encode, None)
        results = self.compare(contenders, compare)
        self.compare({"service, one sentence": service,
                      "onnxruntime in process, one sentence": (ort.encode, None)}, compare[:1], rounds=100)
        self.facts["service_vs_onnxruntime_max_abs"] = float(np.abs(
            results[f"service fp32, max_seq_len {length}"].vectors
            - results[f"onnxruntime in process, max_seq_len {length}"].vectors).max())

    def _int8(self, servers: ExitStack, compare: list[str], service) -> None:
        """int8 beside fp32 through the service for each of INT8_CONFIGURATIONS (issue 23, Done-when 2): the common
        server is the default flags' fp32 side; the others' pairs are started and stopped in turn."""
        length = str(self.args.common_max_seq_len)
        base = ["-max_seq_len", length, "-max_batch_size", str(self.args.common_max_batch_size)]
        layer = str(self.args.common_pooling_layer)
        results = {}
        for label, flags in INT8_CONFIGURATIONS:
            flags = list(flags) or ["-pooling_layer", layer]
            slug = "_".join(f.strip("-").lower() for f in flags)
            int8 = self.export(f"int8_{slug}", *flags, "-quantize", "int8")
            with ExitStack() as pair:
                if label == DEFAULT_FLAGS:
                    fp32 = service
                else:
                    fp32_server = pair.enter_context(self.serve(self.export(f"fp32_{slug}", *flags), *base))
                    fp32 = (pair.enter_context(service_encoder(fp32_server, self.args.ip)), fp32_server)
                int8_server = pair.enter_context(self.serve(int8, *base))
                quantized = (pair.enter_context(service_encoder(int8_server, self.args.ip)), int8_server)
                speed = self.compare({f"service int8, {label}": quantized, f"service fp32 beside int8, {label}": fp32},
                                     compare)
                held_out = list(HELD_OUT_MULTILINGUAL)
                results[label] = {
                    "speedup": speed[f"service int8, {label}"].sentences_per_s
                    / speed[f"service fp32 beside int8, {label}"].sentences_per_s,
                    "held_out_worst_cosine": worst_cosine(fp32[0](held_out), quantized[0](held_out)),
                    "export_worst_cosine": json.loads(
                        (int8 / "bert_export.json").read_text())["extra"]["quantize_worst_cosine"]}
        self.facts["int8"] = results

    def _generous_max_seq_len(self, servers: ExitStack, fp32: Path, base: list[str], compare: list[str],
                              service) -> None:
        """max_seq_len 128 beside 40 on sentences that 40 does not truncate (Done-when 2c), and on the ~42-token
        ones, which 40 truncates (so 128 does more work there)."""
        length = self.args.common_max_seq_len
        server = servers.enter_context(self.serve(fp32, "-max_seq_len", "128", *base))
        generous = (servers.enter_context(service_encoder(server, self.args.ip)), server)
        fitting = self.maker.sentences_within(self.args.common_client_batch_size, length - FITTING_SPREAD, length)
        self.compare({f"service fp32, max_seq_len 128, {fitting_label(length)} sentences": generous,
                      f"service fp32, max_seq_len {length}, {fitting_label(length)} sentences": service}, fitting)
        self.compare({f"service fp32, max_seq_len 128, ~{COMPARE_TOKENS}-token sentences": generous,
                      f"service fp32, max_seq_len {length}, ~{COMPARE_TOKENS}-token sentences": service}, compare)

    def _padding(self, servers: ExitStack, fp32: Path, base: list[str]) -> None:
        mixed = self.maker.mixed(self.args.common_client_batch_size, *MIXED_RANGE)
        adaptive_server = servers.enter_context(self.serve(fp32, "-max_seq_len", "128", *base))
        padded_server = servers.enter_context(self.serve(fp32, "-max_seq_len", "128", "-pad_to_max_seq_len", *base))
        results = self.compare({
            "mixed 5..128, adaptive padding": (servers.enter_context(service_encoder(adaptive_server, self.args.ip)),
                                               adaptive_server),
            "mixed 5..128, padding to 128": (servers.enter_context(service_encoder(padded_server, self.args.ip)),
                                             padded_server)}, mixed)
        # What padding can gain where the time per position is flat in the length (docs/PERFORMANCE.md): the positions
        # of padding everything to 128 over the sentences' own tokens.
        tokens = [min(len(encoding.ids), MIXED_RANGE[1]) for encoding in self.maker.tokenize(mixed)]
        self.facts["padding_ceiling"] = len(tokens) * MIXED_RANGE[1] / sum(tokens)
        from .baselines import time_per_position
        self.facts["onnxruntime_us_per_position"] = time_per_position(fp32, (16, 32, 64, 128))
        self.facts["adaptive_vs_padded_max_abs"] = float(np.abs(
            results["mixed 5..128, adaptive padding"].vectors - results["mixed 5..128, padding to 128"].vectors).max())

    def _perf_analyzer(self, fp32: Path, compare: list[str]) -> None:
        from . import perf_analyzer
        from bert_bridge.core.tokenization import TokenizerSettings, WordPieceTokenizer, pad

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
        triton = subprocess.Popen([sys.executable, "-m", "bert_bridge.triton.standalone", "--model-repository",
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
        for row in self.rows:
            peak = row.pop("peak", None)
            if peak is not None:
                row["peak_rss_mb"] = peak.bytes / 2**20
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
        graph = f.get("graph_vs_reference")
        lines = [
            "## Ratios (measured in this run; each pair took turns on the same sentences: bench/paired.py)", "",
            "- exported fp32 graph / reference graph (transformers + torch.onnx.export + onnxruntime's transformer "
            "optimizer), in process: " + (", ".join(
                f"{shape} {r['ratio']:.2f}x ({r['reference_ms']:.1f} / {r['ours_ms']:.1f} ms)"
                for shape, r in graph.items()) if graph else str(f.get("reference", "not measured"))),
            f"- service fp32 / reference graph in process (max_seq_len {length}): "
            + ratio(f"service fp32, max_seq_len {length}", f"reference graph in process, max_seq_len {length}"),
            f"- service fp32 / onnxruntime in process (max_seq_len {length}): "
            + ratio(f"service fp32, max_seq_len {length}", f"onnxruntime in process, max_seq_len {length}"),
            f"- service fp32 / sentence-transformers in process: "
            + ratio(f"service fp32, max_seq_len {length}", f"sentence-transformers encode, max_seq_len {length}"),
            f"- service at max_seq_len 128 / at {length}, {fitting_label(length)} sentences (nothing truncated): "
            + ratio(f"service fp32, max_seq_len 128, {fitting_label(length)} sentences",
                    f"service fp32, max_seq_len {length}, {fitting_label(length)} sentences"),
            f"- service at max_seq_len 128 / at {length}, ~{COMPARE_TOKENS}-token sentences ({length} truncates them): "
            + ratio(f"service fp32, max_seq_len 128, ~{COMPARE_TOKENS}-token sentences",
                    f"service fp32, max_seq_len {length}, ~{COMPARE_TOKENS}-token sentences"),
            "- mixed lengths 5..128, adaptive padding / padding to 128: "
            + ratio("mixed 5..128, adaptive padding", "mixed 5..128, padding to 128")
            + (f"; vectors max abs difference {f['adaptive_vs_padded_max_abs']:.2e}; padding to 128 / the sentences'"
               f" own tokens (what padding can gain at a flat time per position): {f['padding_ceiling']:.2f}x"
               if "adaptive_vs_padded_max_abs" in f else ""),
            "- onnxruntime in process, time per token position in calls of 1,024 positions (where it is flat, padding"
            " can gain no more than the positions it saves): " + (", ".join(
                f"{length} tokens {us:.0f} us" for length, us in f["onnxruntime_us_per_position"].items())
                if "onnxruntime_us_per_position" in f else "not measured"),
            "- int8 / fp32 service (max_seq_len " + str(length) + "): " + ("; ".join(
                f"{label} " + ratio(f"service int8, {label}", f"service fp32 beside int8, {label}")
                + f", worst cosine {r['held_out_worst_cosine']:.4f} on the held-out multilingual set, "
                  f"{r['export_worst_cosine']:.4f} on the export's check" for label, r in f["int8"].items())
                if "int8" in f else "not measured"),
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


def fitting_label(length: int) -> str:
    return f"{length - FITTING_SPREAD}..{length}-token"


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


def work_dir(args) -> Path:
    """Exports and logs: -work_dir, or $XDG_CACHE_HOME/bert-serving/bench."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bert-serving" / "bench"
    return (args.work_dir or cache).resolve()


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
    bench.args, bench.rows, bench.facts, bench.output, bench.peaks = args, [], {}, args.output, {}
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


def run_family_speed(args) -> None:
    """-model xlmr-base: XLM-R base beside BERT-base in process (bench/family_speed.py)."""
    from . import family_speed
    from bert_exporter.options import packaged_model_dir

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bert-serving" / "bench"
    work = (args.work_dir or cache).resolve()
    bert_base = write_bert_base(work / "bert-base-random", packaged_model_dir() / "vocab.txt")
    summary = family_speed.run(work, args.output, rounds=max(3, 3 * args.compare_rounds), bert_base=bert_base)
    # Its own file: -output is often the folder of the main run, whose summary.md this must not replace.
    (args.output / "family_speed.md").write_text(summary + "\n")
    print(summary)
    print(f"wrote {args.output}/family_speed.md and family_speed.json")


def main(argv=None) -> None:
    args, server_flags = build_parser().parse_known_args(argv)
    if args.rerank:
        from .rerank import run

        run(args)
    elif args.running:
        run_running(args)
    elif args.model == "xlmr-base":
        run_family_speed(args)
    elif args.model == "modernbert-base":
        long_context.LongContextBenchmark(args, server_flags, work_dir(args)).run()
    else:
        Benchmark(args, server_flags).run()


if __name__ == "__main__":
    main()
