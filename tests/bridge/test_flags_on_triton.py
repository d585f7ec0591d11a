"""Flags that shape the deployment do what they say on Triton: -fp16 output, -num_worker instances."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SENTENCES = ["half precision is enough for retrieval", "two instances serve in parallel"]


def test_fp16_output_and_worker_count(start_bridge, default_bridge, legacy_client):
    with legacy_client.BertClient(port=default_bridge.port, port_out=default_bridge.port_out, timeout=60000) as bc:
        full_precision = bc.encode(SENTENCES)
    with start_bridge("-fp16", "-num_worker", "2") as bridge:
        with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000) as bc:
            config = bc.server_config
            half = bc.encode(SENTENCES)
    assert config["fp16"] is True and config["output_dtype"] == "float16"
    assert [group["count"] for group in config["triton"]["instance_group"]] == [2]
    assert half.dtype == np.float16 and half.shape == (2, 384)
    cosine = (half.astype(np.float32) * full_precision).sum(1) / (
        np.linalg.norm(half.astype(np.float32), axis=1) * np.linalg.norm(full_precision, axis=1))
    assert cosine.min() >= 0.9999
