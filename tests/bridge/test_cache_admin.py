"""``bert-serving-cache``: list what the bridge cached (source, flags, size, last use) and prune it, never what a
running bridge uses. Real processes hold the locks and open the logs; the entries of the prune tests are small files
laid out as the bridge lays them out."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bert_bridge.cache_admin import ENTRY_FILE, claim_cache_entry, drop_cache_entry
from bert_bridge.config import default_cache_dir
from bert_exporter.manifest import MANIFEST_FILE
from bert_exporter.options import packaged_model_dir
from harness import free_port

DAY_S = 86400


def cache_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bert_bridge.cache_admin", *args], capture_output=True, text=True,
                          timeout=60)


def make_entry(cache_dir: Path, key: str, *, age_days: float, complete: bool = True) -> Path:
    """An entry as export_on_the_fly leaves it: models/<key>/bert/ (with a manifest when complete) + its record."""
    repository = cache_dir / "models" / key
    (repository / "bert" / "1").mkdir(parents=True)
    (repository / "bert" / "1" / "model.onnx").write_bytes(b"\0" * 50_000)
    if complete:
        (repository / "bert" / MANIFEST_FILE).write_text("{}")
    used = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=age_days)
    (repository / ENTRY_FILE).write_text(json.dumps({
        "source": f"/models/{key}", "name": "bert", "export_flags": ["-model_dir", f"/models/{key}", "-cpu"],
        "created": used.isoformat(timespec="seconds"), "last_used": used.isoformat(timespec="seconds")}))
    return repository


def make_log(cache_dir: Path, name: str, *, age_days: float) -> Path:
    path = cache_dir / "logs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("I tritonserver started\n")
    then = time.time() - age_days * DAY_S
    os.utime(path, (then, then))
    return path


def holder_process(entry: Path, log: Path) -> subprocess.Popen:
    """A process that uses ``entry`` the way a bridge does, and keeps ``log`` open as its tritonserver does."""
    code = ("import sys; from pathlib import Path; from bert_bridge.cache_admin import claim_cache_entry; "
            f"claim_cache_entry(Path({str(entry)!r}), source=Path('/models/held'), name='bert', export_flags=[]); "
            f"log = open({str(log)!r}, 'a'); print('held', flush=True); sys.stdin.read()")
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_prune_keeps_what_a_running_bridge_uses_and_removes_the_rest(tmp_path):
    cache = tmp_path / "cache"
    held = make_entry(cache, "held", age_days=90)
    old = make_entry(cache, "old", age_days=90)
    recent = make_entry(cache, "recent", age_days=1)
    open_log, old_log = make_log(cache, "tritonserver-1.log", age_days=90), make_log(cache, "tritonserver-2.log",
                                                                                   age_days=90)
    holder = holder_process(held, open_log)
    try:
        listed = cache_command("--cache-dir", str(cache), "list")
        assert listed.returncode == 0, listed.stderr
        line = next(line for line in listed.stdout.splitlines() if line.strip().startswith("held "))
        assert "in use" in line and "/models/held" in line
        pruned = cache_command("prune", "--cache-dir", str(cache), "--all")
        assert pruned.returncode == 0, pruned.stderr
        assert held.is_dir() and open_log.is_file(), pruned.stdout
        assert not old.exists() and not recent.exists() and not old_log.exists(), pruned.stdout
        assert f"kept {held}: a running bridge uses it" in pruned.stdout
    finally:
        holder.communicate("")
    assert cache_command("prune", "--cache-dir", str(cache), "--all").returncode == 0
    assert not held.exists() and not open_log.exists(), "once its bridge is gone the entry goes too"


def test_prune_by_age_keeps_recent_entries_and_drops_incomplete_ones(tmp_path):
    cache = tmp_path / "cache"
    old, recent = make_entry(cache, "old", age_days=40), make_entry(cache, "recent", age_days=1)
    broken = make_entry(cache, "broken", age_days=1, complete=False)  # an export that failed or was killed
    old_log, recent_log = make_log(cache, "a.log", age_days=40), make_log(cache, "b.log", age_days=1)
    dry = cache_command("prune", "--cache-dir", str(cache), "--dry-run")
    assert dry.returncode == 0 and f"would remove {old}" in dry.stdout and old.exists()
    pruned = cache_command("prune", "--cache-dir", str(cache))  # default: unused for 30 days
    assert pruned.returncode == 0, pruned.stderr
    assert (old.exists(), recent.exists(), broken.exists()) == (False, True, False), pruned.stdout
    assert (old_log.exists(), recent_log.exists()) == (False, True)
    assert cache_command("prune", "--cache-dir", str(cache), "--older-than", "0.5").returncode == 0
    assert not recent.exists() and not recent_log.exists()


def test_bad_arguments_and_a_missing_cache_are_one_line(tmp_path):
    missing = cache_command("list", "--cache-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and missing.stderr.strip() == f"bert-serving-cache: error: no cache at " \
                                                                  f"{tmp_path / 'nowhere'}"
    for args in (["prune", "--older-than", "soon"], ["prune", "--all", "--older-than", "3"], ["tidy"]):
        result = cache_command("--cache-dir", str(tmp_path), *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_a_failed_export_on_the_fly_leaves_no_entry(tmp_path):
    """bert-serving-start on a folder bert-export refuses: the start fails in one line, and the cache it used lists
    nothing (it listed an 'incomplete 0.0 MB' entry per failed start). The folder passes the bridge's own checks (a
    BERT config) so that the export really starts, and fails in bert-export (no vocabulary)."""
    source = tmp_path / "no-vocabulary"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 100, "hidden_size": 32,
                                                    "num_hidden_layers": 2, "num_attention_heads": 2,
                                                    "intermediate_size": 37}))
    cache = tmp_path / "cache"
    started = subprocess.run([sys.executable, "-m", "bert_bridge.cli", "-model_dir", str(source), "-cache_dir",
                              str(cache), "-port", str(free_port()), "-port_out", str(free_port())],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 2 and "exporting" in started.stderr and "failed" in started.stderr, started.stderr
    assert "has neither vocab.txt nor tokenizer.json" in started.stderr, started.stderr
    listed = cache_command("list", "--cache-dir", str(cache))
    assert listed.returncode == 0, listed.stderr
    assert f"{cache / 'models'}: 0 cached exports" in listed.stdout and "incomplete" not in listed.stdout, listed.stdout


def test_a_failed_export_keeps_an_entry_another_bridge_holds(tmp_path):
    """Another bridge with the same settings may be exporting into the entry right now: only the last one out
    removes it."""
    entry = tmp_path / "cache" / "models" / "shared"
    holder = holder_process(entry, tmp_path / "tritonserver.log")
    lock = claim_cache_entry(entry, source=Path("/models/held"), name="bert", export_flags=[])
    try:
        drop_cache_entry(entry, lock)
        assert entry.is_dir(), "removed while another bridge held it"
        holder.communicate("")
        drop_cache_entry(entry, lock)
        assert not entry.exists()
    finally:
        os.close(lock)
        holder.kill()
        holder.wait()


def locks_held_by(pid: int) -> set[int]:
    """Inodes on which process ``pid`` holds a flock (from /proc/locks)."""
    inodes = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" not in fields and fields[1] == "FLOCK" and int(fields[4]) == pid:
            inodes.add(int(fields[5].split(":")[2]))
    return inodes


@pytest.mark.slow
def test_a_running_bridge_records_and_holds_its_cache_entry(default_bridge):
    """The entry a real bridge serves says where it came from, and that bridge holds its lock while it runs."""
    cache = default_cache_dir()
    held = [folder for folder in (cache / "models").iterdir()
            if folder.stat().st_ino in locks_held_by(default_bridge.process.pid)]
    assert len(held) == 1, "the bridge holds the lock of exactly the entry it serves"
    record = json.loads((held[0] / ENTRY_FILE).read_text())
    assert record["source"] == str(packaged_model_dir()) and "-pooling_strategy" in record["export_flags"]
    assert record["created"] <= record["last_used"]
    listed = cache_command("list")
    line = next(line for line in listed.stdout.splitlines() if line.strip().startswith(held[0].name))
    assert "in use" in line and str(packaged_model_dir()) in line and "REDUCE_MEAN" in line
    dry = cache_command("prune", "--all", "--dry-run")
    assert f"kept {held[0]}: a running bridge uses it" in dry.stdout
