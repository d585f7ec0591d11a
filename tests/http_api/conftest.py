"""One bridge with the HTTP front end for the HTTP tests that need no special flags (started once per session)."""
from __future__ import annotations

import pytest

from harness import free_port
from http_calls import HttpBridge


@pytest.fixture(scope="session")
def http_bridge(start_bridge):
    port = free_port()
    # -http_max_connect 64: the tests send concurrent traffic and must not meet the limit they do not test.
    with start_bridge("-http_port", str(port), "-http_max_connect", "64") as bridge:
        yield HttpBridge(bridge=bridge, http_port=port)


@pytest.fixture(scope="session")
def zmq_client(http_bridge):
    """Our BertClient on the same bridge: the ZeroMQ front end's answers are the reference for HTTP's."""
    from bert_serving.client import BertClient

    with BertClient(port=http_bridge.bridge.port, port_out=http_bridge.bridge.port_out, timeout=60_000) as client:
        yield client
