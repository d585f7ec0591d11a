"""``BertServer``: the original's in-Python server API, run as a supervised ``bert-serving-start`` child process.

The original ran its ventilator in a thread of the caller's process. The bridge cannot: it installs signal handlers on
its event loop (only the main thread may) and starts tritonserver with a parent-death signal (tied to the thread that
forks it). So ``BertServer`` is a thread, as the original was, that starts ``python -m bert_bridge.cli`` with the
caller's flags, relays its log to ``sys.stderr``, marks ``is_ready`` when it serves, and lives exactly as long as the
child: the child gets SIGTERM from the kernel if this thread or process ends without ``close()``, and servers still
running when the interpreter exits are closed first, so nothing is left behind.
"""
from __future__ import annotations

import argparse
import atexit
import os
import subprocess
import sys
import threading
import weakref
from collections import deque
from typing import Optional

from bert_bridge.child_process import spawn, stop
from bert_bridge.cli import READY_MESSAGE
from bert_bridge.config import build_parser
from bert_bridge.errors import StartupError
from bert_bridge.terminate import shut_down

__all__ = ["BertServer"]

# How long close() lets the bridge drain requests in flight and stop Triton before it kills what is left.
CLOSE_TIMEOUT_S = 60.0
LOG_LINES_KEPT = 40

_running: "weakref.WeakSet[BertServer]" = weakref.WeakSet()


def command_line(args: argparse.Namespace) -> list[str]:
    """``bert-serving-start`` flags that reproduce ``args``: every value that differs from the flag's default.

    ``args`` is what ``get_args_parser().parse_args([...])`` returned, possibly changed afterwards (the original's
    layer sweep did ``args.pooling_layer = [-layer]`` between servers).
    """
    flags: list[str] = []
    for action in build_parser()._actions:
        if not action.option_strings or action.dest in ("help", "version") or not hasattr(args, action.dest):
            continue
        value, flag = getattr(args, action.dest), action.option_strings[0]
        if value == action.default:
            continue
        if action.nargs == 0:
            if value:
                flags.append(flag)
        elif isinstance(action, argparse._AppendAction):
            # one value set by hand, as the original's scripts did (args.model_dir = "/models/bert"), or a list
            for item in [value] if isinstance(value, (str, os.PathLike)) else value or ():
                flags += [flag, str(item)]
        elif action.nargs in ("+", "*"):
            flags += [flag, *(str(item) for item in value)]
        else:
            flags += [flag, "NONE" if value is None else str(value)]
    return flags


class BertServer(threading.Thread):
    """``BertServer(get_args_parser().parse_args([...]))``, then ``start()`` ... ``close()``, or ``with BertServer(args):``
    which returns once the server is ready to serve and closes it on exit."""

    def __init__(self, args: argparse.Namespace):
        super().__init__(name=f"BertServer-{args.port}", daemon=True)
        self.args = args
        self.command = [sys.executable, "-m", "bert_bridge.cli", *command_line(args)]
        self.is_ready = threading.Event()
        self.process: Optional[subprocess.Popen] = None
        self._spawned = threading.Event()
        self._log_tail: deque[str] = deque(maxlen=LOG_LINES_KEPT)

    def run(self) -> None:
        # Started here, in the thread that waits for it: the parent-death signal fires when this thread ends.
        try:
            self.process = spawn(self.command, stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1)
        finally:
            self._spawned.set()
        _running.add(self)
        for line in self.process.stderr:
            sys.stderr.write(line)
            self._log_tail.append(line)
            if READY_MESSAGE in line:
                self.is_ready.set()
        self.process.wait()
        self.is_ready.clear()
        _running.discard(self)

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def wait_until_ready(self, timeout_s: Optional[float] = None) -> None:
        """Block until the server serves; raise StartupError with its last log lines if it stops before that."""
        if self.ident is None:
            raise RuntimeError("call start() first")
        waited = 0.0
        while not self.is_ready.wait(0.2):
            waited += 0.2
            if self._spawned.is_set() and not self.is_alive():
                raise StartupError(f"bert-serving-start exited with status {self.returncode} before serving:\n"
                                   + "".join(self._log_tail))
            if timeout_s is not None and waited >= timeout_s:
                raise StartupError(f"bert-serving-start was not ready within {timeout_s} s:\n" + "".join(self._log_tail))

    def close(self) -> None:
        """Stop the server as Ctrl-C would (requests in flight are answered first) and wait until it has exited."""
        if self.ident is None:  # never started
            return
        self._spawned.wait()
        if self.process is not None:
            stop(self.process, timeout_s=CLOSE_TIMEOUT_S)
        self.join()

    def __enter__(self) -> BertServer:
        self.start()
        try:
            self.wait_until_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @staticmethod
    def shutdown(args: argparse.Namespace) -> None:
        """Stop the server at ``args.ip``/``args.port`` (``get_shutdown_parser().parse_args([...])``) and wait until
        it has stopped; TimeoutError when it could not be reached or is still running after ``args.timeout`` ms."""
        stopped, message = shut_down(ip=args.ip, port=args.port, timeout_ms=args.timeout)
        if not stopped:
            raise TimeoutError(message)


@atexit.register
def _close_running_servers() -> None:
    for server in list(_running):
        server.close()
