"""Client-side checks of what ``encode`` is given, as the 1.10 client made them, raising our typed input errors.

The server detects tokenized input from the JSON shape alone (no flag travels), so rejecting ambiguous input here is
what keeps ``is_tokenized`` meaningful.
"""
from __future__ import annotations

from typing import Any, Sequence

from .errors import InputTypeError, InputValueError

__all__ = ["check_texts", "longest_sentence"]


def check_texts(texts: Any, *, is_tokenized: bool) -> None:
    """Raise InputTypeError / InputValueError unless ``texts`` is a non-empty list of non-blank strings
    (``is_tokenized=False``) or a non-empty list of non-empty lists of non-blank tokens (``is_tokenized=True``)."""
    _check_list(texts, "texts")
    for index, item in enumerate(texts):
        if is_tokenized:
            _check_list(item, f"texts[{index}]")
            for position, token in enumerate(item):
                _check_string(token, f"texts[{index}][{position}]", what="token")
        else:
            if isinstance(item, (list, tuple)):
                raise InputTypeError(f"texts[{index}] is a list: pass is_tokenized=True to encode token lists")
            _check_string(item, f"texts[{index}]", what="sentence")


def longest_sentence(texts: Sequence, *, is_tokenized: bool) -> int:
    """The most words in one sentence: tokens when tokenized, whitespace-separated words otherwise (as 1.10 counted)."""
    return max(len(item) if is_tokenized else len(item.split()) for item in texts)


def _check_list(value: Any, name: str) -> None:
    # Tuples are accepted too: they serialize to the same JSON array.
    if not isinstance(value, (list, tuple)):
        raise InputTypeError(f"{name} must be a list, got {type(value).__name__}: {_short(value)}")
    if not value:
        raise InputValueError(f"{name} must be a non-empty list")


def _check_string(value: Any, name: str, *, what: str) -> None:
    if not isinstance(value, str):
        raise InputTypeError(f"{name} must be a str, got {type(value).__name__}: {_short(value)}")
    if not value.strip():
        raise InputValueError(f"{name} must be a non-blank {what}, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates cannot travel as UTF-8 JSON
        raise InputValueError(f"{name} is not valid Unicode text: {e}") from e


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
