"""docs/PERFORMANCE.md is the one place this project's speed figures live, with the machine and the run they come
from. A throughput figure anywhere else in the documentation is a second source that drifts from it (the FAQ said
about 160 sentences/s, SCALING.md 59.6 and 106.3 and "9 replicas for 500/s", HTTP.md 162.1 and 147.0): other
documents link to PERFORMANCE.md instead.

Allowed elsewhere: what benchmarks write (docs/performance/, docs/reliability/, bench/results/), and the Results
section of docs/RELIABILITY.md, the soak's own report of the load it ran.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from harness import REPO_ROOT

SOURCE = "docs/PERFORMANCE.md"
WRITTEN_BY_BENCHMARKS = ("docs/performance/", "docs/reliability/", "bench/results/")
SOAK_REPORT = ("docs/RELIABILITY.md", "## Results")
# A number, optionally what it counts, then a rate: "160 sentences per second", "59.6 sentences/s", "500/s".
INLINE = re.compile(r"\d[\d,.]*\s*(?:k\s+)?(?:(?:sentences?|requests?|queries|embeddings|tokens)\s*)?"
                    r"(?:/\s*s(?:ec)?\b|per\s+second|a\s+second)", re.IGNORECASE)
RATE_HEADER = re.compile(r"/\s*s\b|per\s+second|throughput", re.IGNORECASE)


def documents() -> list[Path]:
    """Every Markdown file of the repository (not .venv/ or other hidden folders, which a walk does not enter)."""
    found = []
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if not name.startswith(".") and not name.endswith(".egg-info")]
        found += [Path(folder) / name for name in files if name.endswith(".md")]
    return sorted(found)


def text_to_check(path: Path) -> str:
    name = path.relative_to(REPO_ROOT).as_posix()
    if name == SOURCE or name.startswith(WRITTEN_BY_BENCHMARKS):
        return ""
    text = path.read_text(encoding="utf-8")
    if name == SOAK_REPORT[0] and SOAK_REPORT[1] in text:
        start = text.index(SOAK_REPORT[1])
        end = text.find("\n## ", start + 1)
        text = text[:start] + (text[end:] if end >= 0 else "")
    return text


def speed_figures(text: str) -> list[str]:
    """Inline figures, and numbers in a table column whose header is a rate or a row whose first cell is one."""
    found = [match.group(0) for match in INLINE.finditer(text)]
    header = None
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(set(cell) <= set(":- ") for cell in cells):  # not the |---| row
            for i, cell in enumerate(cells):
                column = header[i] if i < len(header) else ""
                rate = column if RATE_HEADER.search(column) else cells[0] if i and RATE_HEADER.search(cells[0]) else ""
                if rate and re.search(r"\d", cell):
                    found.append(f"{rate}: {cell}")
    return found


def test_speed_figures_live_only_in_performance_md():
    misplaced = {path.relative_to(REPO_ROOT).as_posix(): figures for path in documents()
                 if (figures := speed_figures(text_to_check(path)))}
    assert not misplaced, (f"throughput figures outside {SOURCE}: move them there (with the machine and the run) and "
                           f"link to it instead: {misplaced}")


def test_the_check_finds_what_the_docs_said_before():
    assert speed_figures("the packaged 6-layer model serves about 160 sentences per second (the run)") == [
        "160 sentences per second"]
    assert speed_figures("Example on this CPU: 500 sentences/s needs 9 replicas, 1,200/s needs more.") == [
        "500 sentences/s", "1,200/s"]
    table = "| client batch | clients | sentences/s | p50 latency |\n|---:|---:|---:|---:|\n| 16 | 1 | 59.6 | 176 ms |\n"
    assert speed_figures(table) == ["sentences/s: 59.6"]
    rows = "| | ZeroMQ | HTTP |\n|---|---:|---:|\n| sentences/s, all rounds | 162.1 | 147.0 |\n| HTTP / ZeroMQ | | 0.907 |\n"
    assert speed_figures(rows) == ["sentences/s, all rounds: 162.1", "sentences/s, all rounds: 147.0"]
    assert speed_figures("show_progress=True shows sentences/s; 5-second buckets; HTTP/1.1; every 10 s") == []
    assert all(text_to_check(path) == "" for path in documents() if path.name == "PERFORMANCE.md")
