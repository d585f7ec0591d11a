"""The original's server-side Python API, ``bert_serving.server``: start, encode with the unmodified 1.10 client,
``BertServer.shutdown``, the context manager, and nothing left running afterwards."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from bert_bridge.config import parse_args
from bert_bridge.errors import StartupError
from bert_serving.server import BertServer
from bert_serving.server.bert_server import command_line
from bert_serving.server.helper import get_args_parser, get_shutdown_parser
from harness import REPO_ROOT, alive, descendants, free_port

SENTENCES = ["First do it", "then do it right", "then do it better"]


def server_args(*flags: str):
    return get_args_parser().parse_args(["-port", str(free_port()), "-port_out", str(free_port()), *flags])


def processes_of(server: BertServer) -> set[int]:
    return {server.process.pid} | descendants(server.process.pid)


def assert_all_gone(pids: set[int], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while alive(pids):
        assert time.monotonic() < deadline, f"processes left behind: {sorted(alive(pids))}"
        time.sleep(0.2)


def test_changed_args_become_the_same_flags():
    """What the original's layer sweep did: parse once, change an attribute, start a server with it."""
    args = get_args_parser().parse_args(["-port", "7000", "-port_out", "7001", "-max_seq_len", "NONE", "-cpu",
                                         "-pooling_strategy", "CLS_TOKEN"])
    args.pooling_layer = [-3, -1]
    config = parse_args(command_line(args))
    assert (config.port, config.port_out, config.max_seq_len, config.cpu) == (7000, 7001, None, True)
    assert config.pooling_layer == (-3, -1) and config.pooling_strategy == "FIRST_TOKEN"
    # Defaults stay implicit, so an exported model's own settings still fill them in.
    assert "num_worker" not in config.explicit and "max_batch_size" not in config.explicit


@pytest.mark.slow
def test_start_encode_shutdown_leaves_nothing_running(legacy_client, hf_model):
    args = server_args()
    server = BertServer(args)
    server.start()
    try:
        server.wait_until_ready(timeout_s=300)
        pids = processes_of(server)
        assert len(pids) > 1, "the bridge runs its tritonserver below it"
        client = legacy_client.BertClient(port=args.port, port_out=args.port_out, timeout=60000)
        vectors = client.encode(SENTENCES)
        client.close()
        assert vectors.shape == (3, 384)
        # The default: layer -2, mean-pooled; checked against transformers.
        import torch

        tokenizer, model = hf_model
        batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch, output_hidden_states=True).hidden_states[-2]
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
        np.testing.assert_allclose(vectors, expected, atol=2e-4)

        BertServer.shutdown(get_shutdown_parser().parse_args(["-port", str(args.port), "-timeout", "30000"]))
        server.join(30)
        assert not server.is_alive() and server.returncode == 0
        assert_all_gone(pids)
    finally:
        server.close()


@pytest.mark.slow
def test_context_manager_returns_when_ready_and_stops_everything(legacy_client):
    args = server_args("-pooling_layer", "-1")
    with BertServer(args) as server:
        assert server.is_ready.is_set()
        pids = processes_of(server)
        client = legacy_client.BertClient(port=args.port, port_out=args.port_out, timeout=60000)
        assert client.server_config["pooling_layer"] == [-1]
        assert client.encode(SENTENCES).shape == (3, 384)
        client.close()
    assert not server.is_alive() and server.returncode == 0
    assert_all_gone(pids)


def test_shutdown_of_nothing_raises_timeout_error():
    args = get_shutdown_parser().parse_args(["-port", str(free_port()), "-timeout", "300"])
    with pytest.raises(TimeoutError, match="no bert-serving server answered"):
        BertServer.shutdown(args)


@pytest.mark.slow
def test_a_server_that_cannot_start_raises_with_its_log():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = get_args_parser().parse_args(["-port", str(port), "-port_out", str(free_port())])
        with pytest.raises(StartupError, match="exited with status 2") as error:
            with BertServer(args):
                pytest.fail("the context manager returned for a server that did not start")
    assert f"cannot listen on -port {port}" in str(error.value)


def test_bert_serving_is_one_namespace_for_both_distributions():
    """The client distribution ships bert_serving.client, this one bert_serving.server: neither owns bert_serving."""
    assert not (REPO_ROOT / "client" / "bert_serving" / "__init__.py").exists()
    code = ("import sys, bert_serving, bert_serving.client, bert_serving.server; "
            "print(getattr(bert_serving, '__file__', None)); print('bert_bridge' in sys.modules)")
    # A fresh interpreter: the client alone imports no bridge code; the server API loads it.
    light = subprocess.run([sys.executable, "-c", "import sys, bert_serving.client; print('bert_bridge' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False"
    both = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert both.stdout.split() == ["None", "True"]


def test_close_before_start_does_nothing_and_waiting_needs_a_start():
    server = BertServer(server_args())
    server.close()
    with pytest.raises(RuntimeError, match="start"):
        server.wait_until_ready(timeout_s=1)


@pytest.mark.slow
def test_killing_the_python_that_started_it_stops_the_server_and_triton(tmp_path):
    script = (
        "import sys, time\n"
        "from bert_serving.server import BertServer\n"
        "from bert_serving.server.helper import get_args_parser\n"
        "server = BertServer(get_args_parser().parse_args(sys.argv[1:]))\n"
        "server.start()\n"
        "server.wait_until_ready(timeout_s=300)\n"
        "print('ready', server.process.pid, flush=True)\n"
        "time.sleep(600)\n")
    with (tmp_path / "owner.log").open("w") as owner_log:  # its bridge's log: why, should it fail to start
        owner = subprocess.Popen([sys.executable, "-c", script, "-port", str(free_port()), "-port_out",
                                  str(free_port())], stdout=subprocess.PIPE, stderr=owner_log, text=True)
    try:
        line = owner.stdout.readline()
        assert line.startswith("ready"), (f"the owner exited with {owner.poll()} before the server was ready: "
                                          f"{(tmp_path / 'owner.log').read_text()[-3000:]}")
        pids = descendants(owner.pid)
        assert int(line.split()[1]) in pids and len(pids) > 1
        owner.kill()
        owner.wait()
        assert_all_gone(pids)
    finally:
        owner.kill()
        owner.wait()
