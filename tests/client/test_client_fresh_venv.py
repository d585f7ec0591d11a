"""The client installed alone -- ``pip install ./client`` into a fresh virtual environment -- brings numpy and pyzmq
only, and works against the bridge (from PyPI: numpy 2 today, which the server side does not use)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
# What `python -m venv` seeds by itself (setuptools only up to Python 3.11).
VENV_SEED = {"pip", "setuptools"}

SCRIPT = """
import json, sys
import numpy as np
import bert_serving.client
from bert_serving.client import BertClient
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tritonclient", "tokenizers", "tensorflow", "onnx",
               "onnxruntime", "torch", "bert_bridge", "bert_exporter", "tqdm"))
with BertClient(port=int(sys.argv[1]), port_out=int(sys.argv[2]), identity="fresh-venv", timeout=120000) as bc:
    one = bc.encode(["hello world", "good day"])
    many = bc.encode(["sentence %d" % i for i in range(300)])
    bc.encode(["x"], blocking=False)
    fetched = bc.fetch_all(concat=True)
    print(json.dumps({"shape": one.shape, "dtype": str(one.dtype), "writeable": one.flags.writeable,
                      "many": many.shape, "fetched": fetched.shape, "heavy": heavy, "numpy": np.__version__,
                      "client_version": bc.status["client_version"], "identity": bc.status["identity"].decode(),
                      "file": bert_serving.client.__file__}))
"""


@pytest.mark.slow
def test_the_client_alone_in_a_fresh_venv_works_against_the_bridge(default_bridge, tmp_path):
    source = tmp_path / "client"  # a copy, so the build leaves nothing in the repository
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    # Nothing of this environment may leak in: the venv must see only what pip put there.
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
                   check=True, timeout=600, env=env)

    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            check=True, capture_output=True, text=True, env=env).stdout
    installed = {package["name"].lower() for package in json.loads(listed)} - VENV_SEED
    assert installed == {"bert-serving-client-triton", "numpy", "pyzmq"}

    run = subprocess.run([str(python), "-c", SCRIPT, str(default_bridge.port), str(default_bridge.port_out)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["shape"] == [2, 384] and result["dtype"] == "float32" and result["writeable"]
    assert result["many"] == [300, 384] and result["fetched"] == [1, 384]
    assert result["heavy"] == [] and result["identity"] == "fresh-venv"
    assert result["client_version"].startswith("1.10.0")
    assert Path(result["file"]).is_relative_to(venv)
