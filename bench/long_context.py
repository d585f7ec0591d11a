"""``bert-serving-benchmark -model modernbert-base``: a ModernBERT-base shape at long context.

The model is written here with random weights (transformers' ModernBertConfig defaults: 22 layers, 768 wide, GeGLU
1,152, 12 heads, a global layer every third, local windows of 128 tokens, 8,192 positions) and the packaged MiniLM's
uncased WordPiece vocabulary as its tokenizer, so the sentences are counted in the served model's own tokens (a real
ModernBERT's BPE would only change the tokenizing, not the model's work per token). It is exported (embedded target,
-max_seq_len 8192, REDUCE_MEAN over the last layer) and served by bert-serving-start, then:

- sentences/s at each of ``-long_lengths`` tokens (512, 2,048, 8,192), one client sending requests of
  ``max(2, 16,384 / length)`` sentences, ``-num_repeat`` counted requests after one warm-up;
- one request of ``-long_documents`` documents (64) of ``-long_document_tokens`` tokens (8,000): its time, and the
  peak RSS of the whole service (bridge + tritonserver + python stub) while it was answered.

With ``-model_dir DIR`` another long-context model is measured instead (the smoke test's tiny ModernBERT), its
-max_seq_len its own limit if below 8,192. Writes long_context.csv and long_context.md to -output.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from .client_load import run_load
from .process_memory import PeakRss
from .server_process import start_server
from .workload import SentenceMaker

MAX_SEQ_LEN = 8192
POSITIONS_PER_REQUEST = 16_384  # tokens a measured request holds (at least two sentences)


def add_arguments(group) -> None:
    group.add_argument("-long_lengths", type=int, nargs="+", default=[512, 2048, 8192],
                       help="-model modernbert-base: the sentence lengths measured, in tokens")
    group.add_argument("-long_documents", type=int, default=64,
                       help="-model modernbert-base: documents in the one long request whose peak RSS is measured")
    group.add_argument("-long_document_tokens", type=int, default=8000,
                       help="-model modernbert-base: tokens of each of those documents")


def write_modernbert_base(folder: Path, vocab_file: Path) -> Path:
    """A ModernBERT-base shape with random weights and a WordPiece tokenizer over ``vocab_file``, as a Hugging Face
    folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)."""
    if (folder / "tokenizer.json").is_file():
        return folder
    import torch
    import transformers
    from tokenizers import BertWordPieceTokenizer

    torch.manual_seed(0)
    tokenizer = BertWordPieceTokenizer(str(vocab_file), lowercase=True)
    special = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
               "mask_token": "[MASK]"}
    ids = {name: tokenizer.token_to_id(token) for name, token in special.items()}
    config = transformers.ModernBertConfig(pad_token_id=ids["pad_token"], cls_token_id=ids["cls_token"],
                                           sep_token_id=ids["sep_token"], bos_token_id=ids["cls_token"],
                                           eos_token_id=ids["sep_token"])
    model = transformers.ModernBertModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**special, "tokenizer_class": "TokenizersBackend"}))
    return folder


class LongContextBenchmark:
    def __init__(self, args, server_flags: list[str], work: Path):
        from bert_exporter.encoder_config import read_config
        from bert_exporter.options import packaged_model_dir

        self.args, self.work = args, work
        vocab = packaged_model_dir() / "vocab.txt"
        if "-model_dir" in server_flags:  # another long-context model (the smoke test's tiny one)
            at = server_flags.index("-model_dir")
            self.source = Path(server_flags[at + 1])
            self.server_flags = server_flags[:at] + server_flags[at + 2:]
        else:
            self.source = write_modernbert_base(work / "modernbert-base-random", vocab)
            self.server_flags = server_flags
        # Sentences are counted in this WordPiece vocabulary: the written model's own, another model's approximately.
        self.maker = SentenceMaker(vocab, args.client_vocab_file)
        self.max_seq_len = min(MAX_SEQ_LEN, read_config(self.source / "config.json").max_position_embeddings)
        self.rows: list[dict] = []

    def export(self) -> Path:
        from bert_bridge.model_source import exporter_code_digest

        folder = self.work / "models" / f"{self.source.name}_{exporter_code_digest()[:8]}"
        if not (folder / "bert_export.json").is_file():
            command = [sys.executable, "-m", "bert_exporter.cli", "-model_dir", str(self.source), "-output",
                       str(folder.parent), "-name", folder.name, "-max_seq_len", str(self.max_seq_len),
                       "-pooling_layer", "-1"]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"bert-serving-benchmark: bert-export of {self.source} failed: {done.stderr}")
        return folder

    def run(self) -> None:
        from bert_serving.client import BertClient

        a = self.args
        folder = self.export()
        log = self.work / "logs" / f"{folder.name}.log"
        server = start_server(["-model_dir", str(folder), "-max_seq_len", str(self.max_seq_len), "-pooling_layer",
                               "-1", *self.server_flags], log, ready_timeout_s=a.wait_till_ready)
        try:
            for length in a.long_lengths:
                count = max(2, POSITIONS_PER_REQUEST // length)
                with PeakRss(server.pid) as peak:
                    result = run_load(server.port, server.port_out, self.maker.sentences(count, length),
                                      num_client=1, repeats=a.num_repeat)
                self._record(f"{count} sentences of {length} tokens", length, count, result.sentences_per_s,
                             result.percentile_ms(50), peak.bytes, result.errors)
            documents = self.maker.sentences(a.long_documents, a.long_document_tokens)
            errors = []
            with PeakRss(server.pid) as peak, BertClient(port=server.port, port_out=server.port_out,
                                                         timeout=-1, check_length=False) as client:
                started = time.perf_counter()
                try:
                    vectors = client.encode(documents)
                    if vectors.shape[0] != len(documents):
                        errors.append(f"{vectors.shape[0]} rows for {len(documents)} documents")
                except Exception as e:  # reported in the table, as run_load reports its errors
                    errors.append(f"{type(e).__name__}: {e}")
                elapsed = time.perf_counter() - started
            self._record(f"one request of {a.long_documents} documents of {a.long_document_tokens} tokens",
                         a.long_document_tokens, a.long_documents, a.long_documents / elapsed, 1000 * elapsed,
                         peak.bytes, errors)
        finally:
            server.stop()
        self.write()

    def _record(self, what: str, length: int, count: int, rate: float, latency_ms: float, peak: int,
                errors: list[str]) -> None:
        self.rows.append({"what": what, "tokens": length, "sentences": count, "sentences_per_s": rate,
                          "tokens_per_s": rate * length, "p50_ms": latency_ms, "peak_rss_mb": peak / 2**20,
                          "errors": "; ".join(errors[:2])})
        print(f"{what}: {rate:.3g} sentences/s, {latency_ms / 1000:.1f} s, peak RSS {peak / 2**20:.0f} MB"
              + (f", errors: {errors[0]}" if errors else ""), file=sys.stderr)

    def write(self) -> None:
        output = self.args.output
        output.mkdir(parents=True, exist_ok=True)
        with open(output / "long_context.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        lines = ["| what | sentences/s | tokens/s | request time (p50) | peak RSS of the service |",
                 "|---|---|---|---|---|"]
        for row in self.rows:
            lines.append(f"| {row['what']} | {row['sentences_per_s']:.3g} | {row['tokens_per_s']:.0f} | "
                         f"{row['p50_ms'] / 1000:.1f} s | {row['peak_rss_mb']:.0f} MB |"
                         + (f" errors: {row['errors']}" if row["errors"] else ""))
        (output / "long_context.md").write_text(f"{self.source.name}, embedded target, -max_seq_len "
                                                f"{self.max_seq_len}\n\n" + "\n".join(lines) + "\n")
        print((output / "long_context.md").read_text())
