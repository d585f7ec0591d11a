"""Fixtures of the client's tests: real ZeroMQ sockets on free ports standing in for a server.

- ``silent_server``: a PULL + XPUB pair bound on free ports that never answers (requests can be read off it).
- ``scripted_server(handler)``: a server in a thread answering with ``handler`` (see scripted_server.py).
- the ``slow`` marker, for tests that build a virtual environment.
"""
from __future__ import annotations

import pytest
import zmq

import bert_serving.client
import scripted_server as scripted

if getattr(bert_serving.client, "__file__", None) is None:
    pytest.exit("bert_serving.client resolves to a bare namespace package: the editable install predates "
                "client/bert_serving/client/__init__.py; run `make install` (or pip install -e ./client)", 2)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds a virtual environment or otherwise takes minutes")


@pytest.fixture
def silent_server():
    """(port, port_out, pull): a server that receives requests and subscriptions and never answers."""
    with zmq.Context() as context:
        pull, xpub = context.socket(zmq.PULL), context.socket(zmq.XPUB)
        for socket in (pull, xpub):
            socket.setsockopt(zmq.LINGER, 0)
        port, port_out = pull.bind_to_random_port("tcp://127.0.0.1"), xpub.bind_to_random_port("tcp://127.0.0.1")
        try:
            yield port, port_out, pull
        finally:
            pull.close()
            xpub.close()


@pytest.fixture
def scripted_server():
    """``with scripted_server(handler) as server:`` -- a real-socket server in a thread answering with ``handler``."""
    return scripted.running
