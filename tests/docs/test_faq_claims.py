"""docs/FAQ.md against the commands' own ``--help``: a flag the FAQ names exists, and a feature the FAQ is asked about
is answered with the flag that provides it.

``FEATURES`` is the explicit list: a FAQ question about a feature -> the command and flag that provide it. Its answer
must say yes and name the flag, and the flag must be in that command's --help, so an answer such as "Not yet." to a
feature the CLI has fails here, as does an answer naming a flag no command has.
"""
from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO_ROOT

FAQ = REPO_ROOT / "docs" / "FAQ.md"
COMMANDS = ("bert-serving-start", "bert-export", "bert-serving-terminate", "bert-serving-cache", "bert-serving-triton")
FEATURES = {
    "Is there int8 quantization?": ("bert-export", "-quantize"),
    "Can I get a concatenation of several layers instead of a single layer ?": ("bert-serving-start", "-pooling_layer"),
    "Can I specify which GPU to use?": ("bert-serving-start", "-device_map"),
    "Can I use my own fine-tuned BERT model?": ("bert-serving-start", "-tuned_model_dir"),
    "Can I use multilingual BERT model provided by Google?": ("bert-serving-start", "-cased_tokenization"),
    "Is it compatible with OpenAI's embeddings API?": ("bert-serving-start", "-http_port"),
    "Can I run the server side on CPU-only machine?": ("bert-serving-start", "-cpu"),
}
FLAG = re.compile(r"^--?[A-Za-z][\w-]*$")
CODE_SPAN = re.compile(r"`([^`]+)`")


@functools.cache
def help_text(command: str) -> str:
    """What ``command --help`` prints, from the console script make install put beside this Python."""
    result = subprocess.run([str(Path(sys.executable).parent / command), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def has_flag(command: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text(command)) is not None


def questions_and_answers(text: str) -> dict[str, str]:
    """Each '### question' heading -> the text up to the next heading."""
    parts = re.split(r"^###? (.+?)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def flags_named(answer: str) -> list[tuple[str | None, str]]:
    """(command or None, flag) for every flag in the answer's code spans; a span starting with a command names its
    flags for that command."""
    found = []
    for span in CODE_SPAN.findall(answer):
        words = span.split()
        command = words[0] if words and words[0] in COMMANDS else None
        found += [(command, word) for word in words if FLAG.match(word)]
    return found


@pytest.mark.parametrize("question", sorted(FEATURES))
def test_a_feature_the_cli_has_is_answered_with_its_flag(question):
    command, flag = FEATURES[question]
    assert has_flag(command, flag), f"{command} --help has no {flag}: update FEATURES or the CLI"
    answers = questions_and_answers(FAQ.read_text(encoding="utf-8"))
    assert question in answers, f"docs/FAQ.md no longer asks {question!r}: update FEATURES"
    answer = answers[question]
    assert not re.match(r"(No|Not)\b", answer), f"{question} is answered {answer.split('.')[0]!r}, but {command} " \
                                                f"has {flag}"
    assert flag in {named for _, named in flags_named(answer)}, f"{question}: the answer does not name `{flag}`"


def test_every_flag_the_faq_names_is_in_a_commands_help():
    unknown = []
    for question, answer in questions_and_answers(FAQ.read_text(encoding="utf-8")).items():
        for command, flag in flags_named(answer):
            if not any(has_flag(c, flag) for c in ([command] if command else COMMANDS)):
                unknown.append(f"{question}: {flag}" + (f" ({command})" if command else ""))
    assert not unknown, "flags in docs/FAQ.md that no command's --help has:\n" + "\n".join(unknown)


def test_the_check_catches_an_answer_that_denies_a_feature():
    """The answer this test was written for: int8 existed (-quantize) while the FAQ said it did not."""
    old = "### Is there int8 quantization?\n\nNot yet. The exporter writes float32 graphs; `-fp16` casts the output.\n"
    answer = questions_and_answers(old)["Is there int8 quantization?"]
    assert re.match(r"(No|Not)\b", answer) and "-quantize" not in {flag for _, flag in flags_named(answer)}
    assert flags_named("`bert-export -target onnx -no_such_flag 3`") == [("bert-export", "-target"),
                                                                        ("bert-export", "-no_such_flag")]
    assert not has_flag("bert-export", "-no_such_flag") and has_flag("bert-export", "-quantize")
