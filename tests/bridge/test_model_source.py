"""Which model bert-serving-start serves: exported folders as they are, source folders exported once and reused."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bert_bridge.config import parse_args
from bert_bridge.model_source import resolve_model, settle_model

pytestmark = pytest.mark.slow


def start_and_fail(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bert_bridge.cli", *flags], capture_output=True, text=True,
                          timeout=120)


def test_an_unchanged_source_is_exported_once_and_reused(default_export, caplog):
    caplog.set_level("INFO", logger="bert_bridge.model")
    again = resolve_model(parse_args([]))
    assert again.folder == default_export.folder
    assert "reusing the model exported earlier" in caplog.text


def test_flags_not_given_come_from_the_manifest(default_export):
    config = settle_model(parse_args(["-model_dir", str(default_export.folder)]), default_export)
    manifest = default_export.manifest
    assert config.pooling_layer == tuple(manifest.pooling_layer) and config.max_seq_len == manifest.max_seq_len
    assert config.do_lower_case == manifest.do_lower_case
    overridden = settle_model(parse_args(["-model_dir", str(default_export.folder), "-max_seq_len", "64"]),
                              default_export)
    assert overridden.max_seq_len == 64  # a runtime setting: the flag wins


def test_a_flag_that_contradicts_the_export_is_refused_in_one_line(default_export):
    result = start_and_fail("-model_dir", str(default_export.folder), "-pooling_layer", "-1")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if " E " in line]
    assert len(errors) == 1 and "-pooling_layer (-1,)" in errors[0] and "exported with (-2,)" in errors[0]
    assert "Traceback" not in result.stderr


def test_a_missing_model_dir_is_refused_in_one_line(tmp_path):
    result = start_and_fail("-model_dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "is not a directory" in result.stderr and "Traceback" not in result.stderr
