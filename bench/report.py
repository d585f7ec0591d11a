"""Benchmark results as files: one CSV of every measured row, Markdown tables, PNG plots, the summary of ratios."""
from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("table", "setting", "value", "sentences_per_s", "per_client_sentences_per_s", "p50_ms", "p90_ms",
           "p99_ms", "peak_rss_mb", "errors")


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict], setting: str) -> str:
    lines = [f"| {setting} | sentences/s | per client | p50 ms | p90 ms | p99 ms | peak RSS MB |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "–"  # in process, or a server we did not start
        lines.append(f"| {r['value']} | {r['sentences_per_s']:.1f} | {r['per_client_sentences_per_s']:.1f} | "
                     f"{r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {rss} |"
                     + (f" errors: {r['errors']}" if r.get("errors") else ""))
    return "\n".join(lines)


def plot(rows: list[dict], table: str, setting: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot([str(r["value"]) for r in rows], [r["sentences_per_s"] for r in rows], marker="o")
    axis.set_xlabel(setting)
    axis.set_ylabel("sentences/s")
    axis.set_title(table)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
