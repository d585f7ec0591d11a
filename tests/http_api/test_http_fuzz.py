"""A property-based fuzz of the HTTP API (issue 8, Done when 5): schemathesis generates requests, valid and not,
for every operation in /openapi.json; none may get a 5xx or hang, and afterwards the ZeroMQ front end still encodes.

The example count is bounded so the whole module takes well under a minute on the shared CPU."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from http_calls import call

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 25
REQUEST_TIMEOUT_S = 30  # a hang shows up as a timeout, which fails the test


FUZZ_SETTINGS = settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                HealthCheck.data_too_large])


def test_no_server_error_and_no_hang(http_bridge):
    # Driven through hypothesis directly: schemathesis' pytest plugin does not run under this pytest.
    schema = schemathesis.openapi.from_url(f"{http_bridge.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    statuses: Counter = Counter()
    for operation in operations:

        @FUZZ_SETTINGS
        @given(case=operation.as_strategy())
        def fuzz(case):
            response = case.call(timeout=REQUEST_TIMEOUT_S)
            statuses[(operation.label, response.status_code)] += 1
            case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])

        fuzz()
    # The fuzz reached the encoders with valid and with invalid requests (a fuzz that never got through is no test).
    for label in ("POST /encode", "POST /v1/embeddings"):
        assert statuses[(label, 200)] > 0 and statuses[(label, 422)] > 0, statuses


def test_zeromq_still_encodes_after_the_fuzz(http_bridge, zmq_client):
    # Runs after the fuzz in this module: the bridge kept serving both front ends.
    assert http_bridge.bridge.process.poll() is None
    vectors = zmq_client.encode(["still serving", "after the fuzz"])
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()
    assert call(f"{http_bridge.url}/ready").status == 200
