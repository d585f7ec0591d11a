"""503 while Triton is down (issue 8, Done when 1): a bridge whose --triton-url points at a port where nothing
listens is alive (/health) but not ready (/ready says why), and encodes fail fast with 503 instead of hanging."""
from __future__ import annotations

import pytest

from harness import free_port
from http_calls import HttpBridge, call

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bridge_without_triton(start_bridge):
    port, nowhere = free_port(), free_port()
    with start_bridge("-http_port", str(port), "--triton-url", f"127.0.0.1:{nowhere}") as bridge:
        yield HttpBridge(bridge=bridge, http_port=port)


def test_alive_but_not_ready(bridge_without_triton):
    url = bridge_without_triton.url
    assert call(f"{url}/health").json() == {"status": "ok"}
    ready = call(f"{url}/ready")
    assert ready.status == 503
    error = ready.json()
    assert (error["type"], error["status"]) == ("BackendUnavailable", 503)
    assert "unavailable" in error["description"] and "127.0.0.1:" in error["description"]
    assert [endpoint["state"] for endpoint in error["endpoints"]] == ["unavailable"]  # each Triton endpoint's state


def test_encodes_fail_with_503(bridge_without_triton):
    url = bridge_without_triton.url
    reply = call(f"{url}/encode", "POST", json_body={"id": 7, "texts": ["hello"]}, timeout_s=60)
    assert reply.status == 503
    assert reply.json()["id"] == 7 and reply.json()["type"] == "BackendUnavailable"
    reply = call(f"{url}/v1/embeddings", "POST", json_body={"input": "hello", "model": "m"}, timeout_s=60)
    assert reply.status == 503
    assert reply.json()["error"]["code"] == "backend_unavailable"


def test_http_client_raises_the_servers_error(bridge_without_triton):
    from bert_serving.client import HTTPBertClient, ServerError

    with pytest.raises(ServerError, match="BackendUnavailable") as raised:
        HTTPBertClient(port=bridge_without_triton.http_port, timeout=60_000).encode(["hello"])
    assert raised.value.type == "BackendUnavailable"


def test_dashboard_status_still_answers(bridge_without_triton):
    # Operators look at the dashboard precisely when the backend is down.
    assert call(f"{bridge_without_triton.url}/status/server").status == 200
    call(f"{bridge_without_triton.url}/encode", "POST", json_body={"id": 8, "texts": ["fails"]}, timeout_s=60)
    activity = call(f"{bridge_without_triton.url}/status/activity").json()
    assert activity["errors"].get("BackendUnavailable", 0) >= 1


def test_http_port_in_use_is_a_one_line_startup_error(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "bert_bridge.cli", "-port", str(free_port()), "-port_out", str(free_port()),
             "-http_port", str(port)],
            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if " E " in line]
    assert len(errors) == 1 and f"-http_port {port}" in errors[0] and "in use" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "tritonserver" not in result.stderr and "exporting" not in result.stderr  # refused before anything slow
