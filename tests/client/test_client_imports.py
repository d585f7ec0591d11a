"""Importing the client pulls in numpy, pyzmq and the standard library only, and exports exactly its API."""
from __future__ import annotations

import json
import subprocess
import sys

import bert_serving.client

HEAVY = ("tritonclient", "tokenizers", "tensorflow", "onnx", "onnxruntime", "torch", "bert_bridge", "bert_exporter",
         "tqdm", "transformers", "grpc")


def test_import_pulls_in_nothing_heavy():
    script = "import sys, json, bert_serving.client; print(json.dumps(sorted(sys.modules)))"
    modules = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                        text=True).stdout)
    assert "bert_serving.client" in modules
    loaded_heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert loaded_heavy == []


def test_bert_serving_stays_a_namespace_package():
    # The 1.10 server and our client can share the bert_serving namespace only if neither owns bert_serving/__init__.
    assert getattr(sys.modules["bert_serving"], "__file__", None) is None
    assert (bert_serving.client.__file__ or "").endswith("__init__.py"), (
        "bert_serving.client resolves to a bare namespace package: the editable install predates "
        "client/bert_serving/client/__init__.py; run `make install` (or pip install -e ./client)")


def test_public_names():
    assert set(bert_serving.client.__all__) == {
        "__version__", "BertClient", "ConcurrentBertClient", "HTTPBertClient", "Response", "BertClientError", "BertTimeoutError",
        "ClientClosedError", "InputError", "InputTypeError", "InputValueError", "ProtocolError", "ServerError",
        "VersionMismatchError", "AuthenticationError"}
    for name in bert_serving.client.__all__:
        assert hasattr(bert_serving.client, name), name
