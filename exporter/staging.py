"""The hidden staging folder an export is assembled in, and its move into place.

A model folder with a manifest is always complete (the bridge treats a manifest as "already exported"), so the folder
is written aside, as ``REPO/.NAME.partial-HOST-PID-RANDOM``, and renamed into place at the end. The name records who
owns it: an export that was killed outright (SIGKILL, a power cut) cannot remove its staging folder, so the next export
of the same name into the same repository removes those whose owner process on this host is gone. Folders of other
hosts (a repository on a shared volume) are left alone: their owner cannot be checked from here.

Staging folders are created with ``os.mkdir`` so they get the umask's permissions like any folder the user creates
(``tempfile.mkdtemp`` would make them 0700, unreadable by a tritonserver running as another user).
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["create_staging", "remove_own_staging", "remove_stale_staging", "move_into_place", "signals_held"]

log = logging.getLogger(__name__)

RETIRED_SUFFIX = "-old"
# Signals that interrupt an export (cli.py turns them into an exception); held back while folders are renamed.
INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _prefix(name: str) -> str:
    return f".{name}.partial-"


def _host() -> str:
    # '-' separates the fields of the staging name; a host name may hold one.
    return socket.gethostname().replace("-", "_") or "localhost"


def create_staging(output: Path, name: str) -> Path:
    """A new, empty staging folder for model ``name`` in repository ``output``, owned by this process."""
    while True:
        folder = output / f"{_prefix(name)}{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:  # a 32-bit collision: draw again
            continue


def _owner_is_gone(folder_name: str, name: str) -> bool:
    """True when the staging folder's owner process ran on this host and has exited."""
    fields = folder_name[len(_prefix(name)):].removesuffix(RETIRED_SUFFIX).rsplit("-", 2)
    if len(fields) != 3 or not fields[1].isdigit():
        return True  # written by an exporter before owners were recorded (a random mkdtemp suffix): long dead
    host, pid = fields[0], int(fields[1])
    if host != _host():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_own_staging(output: Path, name: str) -> None:
    """Remove this process's staging folders of ``name``: found by owner, so an interruption at any point is covered."""
    if output.is_dir():
        for folder in output.glob(f"{_prefix(name)}{_host()}-{os.getpid()}-*"):
            shutil.rmtree(folder, ignore_errors=True)


def remove_stale_staging(output: Path, name: str) -> list[Path]:
    """Remove the staging folders of ``name`` left in ``output`` by exports that were killed; return them."""
    removed = []
    if not output.is_dir():
        return removed
    for folder in output.iterdir():
        if folder.name.startswith(_prefix(name)) and folder.is_dir() and _owner_is_gone(folder.name, name):
            log.info("removing %s, left by an export that was killed", folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Interrupting signals that arrive inside the block are raised again when it ends (the renames here, so an
    interruption never loses the old model; export.py's loading of extension modules).

    Their handlers are swapped for one that only records them, rather than the signals being blocked: a blocked
    signal still reaches any other thread of the process (numpy's BLAS threads, onnxruntime's), and Python then runs
    the handler in the main thread all the same. Handlers are Python's in the main thread only; elsewhere the block
    runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: arrived.append(signum)) for sig in INTERRUPTING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if arrived:
            signal.raise_signal(arrived[0])


def move_into_place(staging: Path, folder: Path) -> Path:
    """Rename the complete staging folder to ``folder``, replacing an existing model of that name."""
    with signals_held():
        if folder.exists():
            retired = staging.with_name(staging.name + RETIRED_SUFFIX)
            folder.rename(retired)
            staging.rename(folder)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(folder)
    return folder
