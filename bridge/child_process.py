"""Child processes that never outlive the bridge: the embedded tritonserver and on-the-fly bert-export runs.

Each child gets its own session (so a terminal's Ctrl-C reaches only the bridge, which stops its children in order)
and, on Linux, a parent-death signal: if the bridge is killed outright (``kill -9``), the kernel sends the child
SIGTERM, and both tritonserver and bert-export clean up on SIGTERM. Everything a child starts stays in its process
group, so ``kill_group`` also reaches grandchildren such as Triton's python backend stubs.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec."""
    os.setsid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


def spawn(command: list[str], **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` for a child in its own process group that is sent SIGTERM when the bridge dies.

    The kernel sends the parent-death signal when the *thread* that forked the child ends: call this from the main
    thread (or another thread that lives as long as the child).
    """
    parent = os.getpid()
    return subprocess.Popen(command, preexec_fn=lambda: _die_with_parent(parent), **popen_kwargs)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL whatever is left in the child's process group (the child itself is normally gone already)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop(process: subprocess.Popen, *, timeout_s: float, first_signal: int = signal.SIGTERM) -> None:
    """Ask the child to stop, wait up to ``timeout_s``, then kill its whole process group."""
    if process.poll() is None:
        process.send_signal(first_signal)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    kill_group(process)
    process.wait()
