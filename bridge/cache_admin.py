"""The bridge's cache of on-the-fly exports and its logs: what each entry is, whether it is in use, and pruning.

Layout under ``--cache-dir`` (default ``$XDG_CACHE_HOME/bert-serving``)::

    models/<key>/<name>/         a model exported on the fly (model_source.py), key = source files + flags + exporter
    models/<key>/cache_entry.json  what produced it (source, bert-export flags) and when it was created and last used
    logs/                        tritonserver logs
    served/bridge-<port>/<name>  links to the exports the bridge on that -port serves: its embedded Triton's
                                 repository, rewritten at every start; never pruned (links only)
    triton-backends/             the python backend link; small, never pruned

A bridge marks the entry it serves: it holds a shared ``flock`` on the entry's folder from before its export until it
exits (the kernel drops the lock when the process dies, however it dies). ``prune`` removes an entry only while it
holds the exclusive lock, so it never removes what a running bridge exports or serves, and a bridge starting meanwhile
waits for the removal and exports again. A log is never removed while a running process has it open (tritonserver
writes to it). A bridge whose export fails or is interrupted removes the entry it made (``drop_cache_entry``);
entries left without a model (by a bridge that was killed) are pruned whatever their age, when not in use.

``bert-serving-cache list`` and ``bert-serving-cache prune [--older-than DAYS | --all] [--dry-run]``.
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from bert_exporter.manifest import MANIFEST_FILE

from .config import default_cache_dir
from .errors import StartupError

__all__ = ["claim_cache_entry", "drop_cache_entry", "CacheEntry", "cache_entries", "main"]

PROG = "bert-serving-cache"
ENTRY_FILE = "cache_entry.json"
DEFAULT_MAX_AGE_DAYS = 30.0


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def claim_cache_entry(repository: Path, *, source: Path, name: str, export_flags: Sequence[str]) -> int:
    """Mark ``repository`` (one cache entry) as used by this process until it exits, and record this use; return the
    lock's file descriptor (for ``drop_cache_entry``).

    The lock's file descriptor is left open on purpose: it must live exactly as long as this process, which the kernel
    guarantees and no Python object would.
    """
    try:
        lock = _lock_for_this_process(repository)
        record = _read_record(repository) or {"source": str(source), "name": name, "export_flags": list(export_flags),
                                              "created": _now()}
        record["last_used"] = _now()
        partial = repository / f".{ENTRY_FILE}.{os.getpid()}"
        partial.write_text(json.dumps(record, indent=2) + "\n")
        partial.replace(repository / ENTRY_FILE)  # two bridges starting at once each write a whole file
    except OSError as e:
        raise StartupError(f"cannot use the cache folder {repository}: {e.strerror or e}") from e
    return lock


def drop_cache_entry(repository: Path, lock: int) -> None:
    """Remove the entry this process claimed (``lock`` from claim_cache_entry) when its export failed: an entry
    without a model is of no use to anyone. Left alone while another bridge holds it too: that one may be exporting
    into it now."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    shutil.rmtree(repository, ignore_errors=True)


def _lock_for_this_process(repository: Path) -> int:
    while True:
        repository.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(repository, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(descriptor, fcntl.LOCK_SH)  # waits while a prune removes this entry
        try:
            if os.stat(repository).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)  # the entry was pruned while we waited: make it again


def _read_record(repository: Path) -> Optional[dict]:
    try:
        record = json.loads((repository / ENTRY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _size_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _parse_time(text: object) -> Optional[float]:
    try:
        return datetime.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class CacheEntry:
    folder: Path
    source: str
    name: str
    export_flags: tuple[str, ...]
    last_used: float  # epoch seconds
    size_bytes: int
    complete: bool  # holds an exported model (a manifest)
    in_use: bool  # a running bridge holds its lock

    @property
    def flags_text(self) -> str:
        flags, skip = [], False
        for flag in self.export_flags:  # the source is shown on its own
            if skip:
                skip = False
            elif flag == "-model_dir":
                skip = True
            else:
                flags.append(flag)
        return " ".join(flags)


def _is_locked(folder: Path) -> bool:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def cache_entries(cache_dir: Path) -> list[CacheEntry]:
    entries = []
    models = cache_dir / "models"
    for folder in sorted(models.iterdir()) if models.is_dir() else []:
        if not folder.is_dir():
            continue
        record = _read_record(folder) or {}
        name = str(record.get("name", ""))
        manifests = sorted(folder.glob(f"*/{MANIFEST_FILE}"))
        if not name and manifests:
            name = manifests[0].parent.name
        last_used = _parse_time(record.get("last_used")) or folder.stat().st_mtime
        entries.append(CacheEntry(
            folder=folder, source=str(record.get("source", "unknown (exported before entries were recorded)")),
            name=name or "?", export_flags=tuple(map(str, record.get("export_flags", ()))), last_used=last_used,
            size_bytes=_size_bytes(folder), complete=bool(manifests), in_use=_is_locked(folder)))
    return entries


def _open_files() -> set[str]:
    """Files some running process has open (those of other users' processes only when we may look)."""
    opened = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                opened.add(os.readlink(fd))
        except OSError:  # the process ended, or is not ours to inspect
            continue
    return opened


def _log_files(cache_dir: Path) -> list[Path]:
    logs = cache_dir / "logs"
    return sorted(p for p in logs.rglob("*") if p.is_file()) if logs.is_dir() else []


def _megabytes(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.1f} MB"


def _when(epoch_s: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def list_cache(cache_dir: Path) -> None:
    entries = cache_entries(cache_dir)
    print(f"{cache_dir / 'models'}: {len(entries)} cached exports, {_megabytes(sum(e.size_bytes for e in entries))}")
    for entry in entries:
        state = "in use" if entry.in_use else ("ready" if entry.complete else "incomplete")
        print(f"  {entry.folder.name}  {_megabytes(entry.size_bytes):>9}  last used {_when(entry.last_used)}  "
              f"{state:<10}  {entry.source}  {entry.flags_text}".rstrip())
    logs, opened = _log_files(cache_dir), _open_files()
    print(f"{cache_dir / 'logs'}: {len(logs)} logs, {_megabytes(sum(p.stat().st_size for p in logs))}")
    for path in logs:
        state = "open" if str(path) in opened else ""
        print(f"  {path.relative_to(cache_dir / 'logs')}  {_megabytes(path.stat().st_size):>9}  "
              f"modified {_when(path.stat().st_mtime)}  {state}".rstrip())


def prune_cache(cache_dir: Path, *, max_age_days: Optional[float], dry_run: bool) -> int:
    """Remove entries and logs unused for longer than ``max_age_days`` (None: all unused); return bytes freed."""
    oldest_kept = time.time() - max_age_days * 86400 if max_age_days is not None else float("inf")
    verb = "would remove" if dry_run else "removed"
    freed = 0
    for entry in cache_entries(cache_dir):
        if entry.complete and entry.last_used >= oldest_kept:
            continue
        descriptor = os.open(entry.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"kept {entry.folder}: a running bridge uses it")
                continue
            if not dry_run:
                shutil.rmtree(entry.folder)
        finally:
            os.close(descriptor)
        freed += entry.size_bytes
        print(f"{verb} {entry.folder} ({_megabytes(entry.size_bytes)}, {entry.source}, "
              f"last used {_when(entry.last_used)})")
    opened = _open_files()
    for path in _log_files(cache_dir):
        if path.stat().st_mtime >= oldest_kept:
            continue
        if str(path) in opened:
            print(f"kept {path}: a running process writes it")
            continue
        size = path.stat().st_size
        if not dry_run:
            path.unlink()
        freed += size
        print(f"{verb} {path} ({_megabytes(size)})")
    print(f"{'would free' if dry_run else 'freed'} {_megabytes(freed)}")
    return freed


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if days < 0:
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, got {text!r}")
    return days


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", "-cache_dir", "--cache_dir", dest="cache_dir", type=Path,
                        default=argparse.SUPPRESS,
                        help="the bridge's cache (default: $XDG_CACHE_HOME/bert-serving, as bert-serving-start)")
    parser = argparse.ArgumentParser(prog=PROG, parents=[common],
                                     description="List or prune the models bert-serving-start exported on the fly, "
                                                 "and its logs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,prune}")
    commands.add_parser("list", parents=[common], help="each cached model (source, flags, size, last use) and log")
    prune = commands.add_parser("prune", parents=[common],
                                help="remove cached models and logs unused for a while; never what a running bridge "
                                     "uses")
    ages = prune.add_mutually_exclusive_group()
    ages.add_argument("--older-than", type=_days, default=DEFAULT_MAX_AGE_DAYS, metavar="DAYS",
                      help=f"remove what was last used more than DAYS ago (default: {DEFAULT_MAX_AGE_DAYS:g})")
    ages.add_argument("--all", action="store_true", help="remove everything no running bridge uses")
    prune.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = _parser().parse_args(argv)
    cache_dir = getattr(args, "cache_dir", None) or default_cache_dir()
    if not cache_dir.is_dir():
        print(f"{PROG}: error: no cache at {cache_dir}", file=sys.stderr)
        sys.exit(1)
    if args.command == "list":
        list_cache(cache_dir)
    else:
        prune_cache(cache_dir, max_age_days=None if args.all else args.older_than, dry_run=args.dry_run)
    sys.exit(0)


if __name__ == "__main__":
    main()
