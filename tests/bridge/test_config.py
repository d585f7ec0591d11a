"""bert-serving-start's flags: the original's spellings and defaults, and which ones the user gave."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bert_bridge.config import parse_args

# The original 1.10 server's config keys and defaults (shared/reference/original-server-semantics.md §5).
ORIGINAL_DEFAULTS = {
    "ckpt_name": "bert_model.ckpt", "config_name": "bert_config.json", "cors": "*", "cpu": False, "device_map": [],
    "do_lower_case": True, "fixed_embed_length": False, "fp16": False, "gpu_memory_fraction": 0.5,
    "graph_tmp_dir": None, "http_max_connect": 10, "http_port": None, "mask_cls_sep": False, "max_batch_size": 256,
    "max_seq_len": 25, "no_position_embeddings": False, "no_special_token": False, "num_worker": 1,
    "pooling_layer": [-2], "pooling_strategy": 2, "port": 5555, "port_out": 5556, "prefetch_size": 10,
    "priority_batch_size": 16, "show_tokens_to_client": False, "tuned_model_dir": None, "verbose": False,
    "xla": False,
}


def test_defaults_are_the_originals():
    args = parse_args([]).original_args()
    assert {key: args[key] for key in ORIGINAL_DEFAULTS} == ORIGINAL_DEFAULTS
    assert set(args) >= set(ORIGINAL_DEFAULTS) | {"model_dir"}


def test_original_command_line_is_accepted():
    config = parse_args([
        "-model_dir", "/m", "-tuned_model_dir", "/t", "-ckpt_name", "model.ckpt-100", "-config_name", "c.json",
        "-graph_tmp_dir", "/tmp/g", "-max_seq_len", "NONE", "-cased_tokenization", "-pooling_layer", "-4", "-3", "-2",
        "-1", "-pooling_strategy", "CLS_TOKEN", "-mask_cls_sep", "-no_special_token", "-show_tokens_to_client",
        "-no_position_embeddings", "-port", "6000", "-port_out", "6001", "-http_port", "8125", "-http_max_connect",
        "20", "-cors", "example.com", "-num_worker", "4", "-max_batch_size", "128", "-priority_batch_size", "8",
        "-cpu", "-xla", "-fp16", "-gpu_memory_fraction", "0.9", "-device_map", "0", "1", "-prefetch_size", "5",
        "-fixed_embed_length", "-verbose",
    ])
    assert config.model_dir == Path("/m") and config.tuned_model_dir == Path("/t")
    assert config.max_seq_len is None and config.do_lower_case is False
    assert config.pooling_layer == (-4, -3, -2, -1) and config.pooling_strategy == "FIRST_TOKEN"
    assert (config.port, config.port_out, config.http_port) == (6000, 6001, 8125)
    assert config.num_worker == 4 and config.device_map == (0, 1) and config.max_batch_size == 128
    assert config.original_args()["pooling_strategy"] == 4
    assert {"pooling_layer", "max_seq_len", "do_lower_case", "xla", "device_map"} <= config.explicit
    assert "ip" not in config.explicit


def test_the_ip_flag_says_it_binds_http_too(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    ip_help = capsys.readouterr().out.split("-ip IP, --ip IP")[1].split("\n  -")[0]
    assert "ZeroMQ ports and the HTTP port" in " ".join(ip_help.split()) and "0.0.0.0" in ip_help


def test_double_dash_and_alias_spellings():
    config = parse_args(["--max-seq-len", "64", "--port_out", "7001", "-port_in", "7000", "--triton-url", "h:8001"])
    assert (config.max_seq_len, config.port, config.port_out, config.triton_urls) == (64, 7000, 7001, ("h:8001",))
    assert not config.embedded_triton


def test_several_triton_urls_repeated_or_comma_separated_keep_their_order():
    config = parse_args(["--triton-url", "a:8001,b:8001", "--triton-url", "triton-grpc.ns.svc:8001"])
    assert config.triton_urls == ("a:8001", "b:8001", "triton-grpc.ns.svc:8001")
    assert parse_args([]).embedded_triton and parse_args([]).triton_urls == ()


def test_triton_endpoint_timeout_and_resolve_interval():
    defaults = parse_args([])
    assert (defaults.triton_endpoint_timeout_s, defaults.triton_resolve_interval_s) == (10.0, 10.0)
    config = parse_args(["--triton-endpoint-timeout-s", "2.5", "-triton_resolve_interval_s", "1"])
    assert (config.triton_endpoint_timeout_s, config.triton_resolve_interval_s) == (2.5, 1.0)


@pytest.mark.parametrize("argv", [["-max_seq_len", "3"], ["-max_seq_len", "long"], ["-pooling_strategy", "AVG"],
                                  ["-num_worker", "0"], ["-no_such_flag"], ["--triton-endpoint-timeout-s", "0"],
                                  ["--triton-resolve-interval-s", "soon"]])
def test_bad_flags_exit_2_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_and_version_are_instant_and_light():
    code = ("import sys; from bert_bridge.cli import start\n"
            "try:\n start(['-version'])\nexcept SystemExit: pass\n"
            "heavy = {'tensorflow', 'tritonclient', 'onnxruntime', 'tokenizers', 'torch'} & set(sys.modules)\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1.10.0" in result.stdout


def test_http_flags(monkeypatch):
    from bert_bridge.config import API_KEY_ENV, DEFAULT_HTTP_MAX_REQUEST_BYTES, IGNORED_FLAGS

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    config = parse_args([])
    assert (config.http_port, config.http_max_connect, config.cors, config.api_key) == (None, 10, "*", None)
    assert config.http_max_request_bytes == DEFAULT_HTTP_MAX_REQUEST_BYTES
    assert not {"http_port", "http_max_connect", "cors"} & IGNORED_FLAGS.keys()  # HTTP is served now
    config = parse_args(["-http_port", "8125", "--api-key", "s3cret", "--http-max-request-bytes", "1000"])
    assert (config.http_port, config.api_key, config.http_max_request_bytes) == (8125, "s3cret", 1000)
    assert "s3cret" not in repr(config) and "api_key" not in config.original_args()
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert parse_args([]).api_key == "from-env"
    assert parse_args(["--api-key", "flag-wins"]).api_key == "flag-wins"
