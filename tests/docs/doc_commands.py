"""The shell commands the docs show: every line of a bash (or untagged) fence that starts a program.

A command is marked as needing hardware or software the tests do not have by a trailing comment, or by a comment
line above it in the same fence, that says "needs a GPU host" or "needs Docker".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("make", "bert-", "curl", "docker", "pip", "python", "tritonserver", "kubectl", "perf_analyzer",
            "trtexec", "apt-get", "nvidia-smi")
MARKERS = ("needs a GPU host", "needs Docker")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class DocCommand:
    file: str
    line: int
    command: str  # without its comment, whitespace collapsed, a leading .venv/bin/ dropped
    marked: bool  # needs a GPU host or Docker


def normalize(command: str) -> str:
    command = " ".join(command.split())
    return command[len(".venv/bin/"):] if command.startswith(".venv/bin/") else command


def _split_comment(line: str) -> tuple[str, str]:
    """'cmd  # comment' -> ('cmd', 'comment'); a '#' inside quotes does not start a comment."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1:].strip()
    return line.rstrip(), ""


def commands_in(path: Path, root: Path) -> list[DocCommand]:
    found: list[DocCommand] = []
    fence_language = None
    fence_marked = False
    pending, pending_line, pending_comment = "", 0, ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        opening = FENCE.match(raw.strip())
        if opening and fence_language is None:
            fence_language, fence_marked = opening.group(1) or "", False
            continue
        if raw.strip() == "```" and fence_language is not None:
            fence_language = None
            continue
        if fence_language not in ("bash", "sh", "shell", ""):
            continue
        text, comment = _split_comment(raw)
        if not text.strip():
            fence_marked |= any(marker in comment for marker in MARKERS)
            continue
        if not pending:
            pending_line, pending_comment = number, ""
        pending += " " + text.strip().removesuffix("\\")
        pending_comment += " " + comment
        if text.rstrip().endswith("\\"):
            continue
        command, pending = normalize(pending), ""
        if command.startswith(PROGRAMS) or command.startswith(".venv/"):
            marked = fence_marked or any(marker in pending_comment for marker in MARKERS)
            found.append(DocCommand(str(path.relative_to(root)), pending_line, command, marked))
    return found
