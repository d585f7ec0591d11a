"""Malformed requests never take the bridge down (issue 10, Done when 1).

A property-based fuzz (hypothesis) sends thousands of malformed ZeroMQ messages -- wrong frame counts, non-numeric
RID or LEN, invalid UTF-8 or JSON, wrong types at any depth, empty lists, a LEN that disagrees with the payload,
payloads over the byte limit -- from raw PUSH sockets, then thousands of malformed HTTP requests (arbitrary bytes,
wrong content types, chunked bodies, broken or deeply nested JSON) to the same bridge. Afterwards the unmodified 1.10
client encodes, the bridge is the same process and its RSS grew less than 10% over a warm-up. Every ZeroMQ message
whose frame 0 and frame 2 name an identity and a RID got exactly one error reply, and the log stayed short.

The HTTP part complements tests/http_api/test_http_fuzz.py, which sends schema-shaped requests (schemathesis).
"""
from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bert_bridge.log_limits import RateLimitedLog
from harness import free_port

pytestmark = pytest.mark.slow

IDENTITIES = [b"fuzz-%d" % i for i in range(6)]
ZMQ_MAX_REQUEST_BYTES = 65536
REPLY_TIMEOUT_S = 30  # replies to a RID-1 message may be held 5 s for a new client's subscription
HTTP_TIMEOUT_S = 30  # a hang shows up as a timeout, which fails the test
COMMANDS = (b"SHOW_CONFIG", b"SHOW_STATUS", b"TERMINATION")
# Messages per hypothesis example (one batch each): thousands in all, within the module's time budget.
ZMQ_BATCH = (20, 40)
ZMQ_EXAMPLES, ZMQ_WARMUP_EXAMPLES = 100, 15
HTTP_BATCH = (10, 20)
HTTP_EXAMPLES, HTTP_WARMUP_EXAMPLES = 110, 10
RSS_GROWTH_LIMIT = 0.10

FUZZ_SETTINGS = dict(deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                     suppress_health_check=list(HealthCheck))


# -- what a malformed ZeroMQ message looks like -----------------------------------------------------------------------

def encodable(value) -> bool:
    """What the bridge would encode: a non-empty list of strings, or of non-empty lists of strings."""
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(item, list) for item in value):
        return all(item and all(isinstance(token, str) for token in item) for item in value)
    return all(isinstance(item, str) for item in value)


identities = st.sampled_from(IDENTITIES)
decimals = st.integers(0, 10 ** 12).map(lambda n: b"%d" % n)
not_decimals = st.binary(max_size=12).filter(lambda b: not b.isdigit())
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=10)
sentences = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=4)


def as_json(value) -> bytes:
    return json.dumps(value).encode()


@st.composite
def wrong_frame_counts(draw):
    frames = draw(st.lists(st.binary(max_size=30), min_size=1, max_size=8).filter(lambda f: len(f) != 4))
    if len(frames) >= 3 and draw(st.booleans()):  # frames 0 and 2 say whom to answer
        frames[0], frames[2] = draw(identities), draw(decimals)
    return frames


@st.composite
def bad_decimals(draw):
    request_id, length = draw(st.sampled_from([(not_decimals, decimals), (decimals, not_decimals),
                                               (not_decimals, not_decimals)]))
    return [draw(identities), as_json(draw(sentences)), draw(request_id), draw(length)]


@st.composite
def empty_identities(draw):
    return [b"", as_json(draw(sentences)), draw(decimals), b"1"]


@st.composite
def invalid_utf8(draw):
    broken = draw(st.binary(min_size=1, max_size=20).filter(lambda b: not _decodes(b)))
    return [draw(identities), b'["' + broken + b'"]', draw(decimals), b"1"]


@st.composite
def invalid_json(draw):
    text = draw(st.one_of(st.text(max_size=30), sentences.map(lambda s: json.dumps(s)[:-1]))
                .filter(lambda t: not _parses(t) and t.encode() not in COMMANDS))
    return [draw(identities), text.encode(), draw(decimals), draw(decimals)]


@st.composite
def wrong_types(draw):
    """JSON that is not a list of sentences: scalars, objects, non-string items at any depth, empty token lists,
    'pairs' made of lists, empty strings mixed with wrong items; LEN agrees where there is a length to agree with."""
    base = st.one_of(
        json_values,
        st.lists(json_values, min_size=1, max_size=5),
        st.lists(st.lists(json_values, max_size=4), min_size=1, max_size=4),
        st.tuples(st.just(""), json_values).map(list),  # an empty string beside a wrong item
        st.tuples(st.lists(st.text(max_size=5), max_size=3), st.just("|||"), json_values).map(list),
    )
    value = draw(base.filter(lambda v: not encodable(v)))
    length = b"%d" % len(value) if isinstance(value, list) else draw(decimals)
    return [draw(identities), as_json(value), draw(decimals), length]


@st.composite
def length_mismatches(draw):
    texts = draw(sentences)
    length = draw(st.integers(0, 100).filter(lambda n: n != len(texts)))
    return [draw(identities), as_json(texts), draw(decimals), b"%d" % length]


@st.composite
def oversized(draw):
    size = ZMQ_MAX_REQUEST_BYTES + draw(st.integers(1, 4096))
    return [draw(identities), as_json(["x" * (size - 4)]), draw(decimals), b"1"]


@st.composite
def empty_lists(draw):
    return [draw(identities), b"[]", draw(decimals), b"0"]


malformed_messages = st.one_of(wrong_frame_counts(), bad_decimals(), empty_identities(), invalid_utf8(),
                               invalid_json(), wrong_types(), empty_lists(), length_mismatches(), oversized())


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def answerable(frames: list) -> bool:
    """The documented rule: frame 0 names an identity and frame 2 is an ASCII decimal RID."""
    return len(frames) >= 3 and frames[0] in IDENTITIES and frames[2].isdigit()


# -- what a malformed HTTP request looks like ------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
content_types = st.one_of(st.sampled_from([
    "application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded",
    "multipart/form-data", "multipart/form-data; boundary=xyz", "application/octet-stream", ""]), header_text)
nested = st.integers(50, 3000).map(lambda n: b"[" * n + b"]" * n)
http_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(as_json),
    st.fixed_dictionaries({}, optional={"id": json_values, "texts": json_values, "is_tokenized": json_values,
                                        "input": json_values, "model": json_values,
                                        "encoding_format": json_values, "dimensions": json_values}).map(as_json),
    nested.map(lambda n: b'{"texts": ' + n + b', "id": 1}'),
    nested.map(lambda n: b'{"input": ' + n + b', "model": "m"}'),
    st.binary(min_size=1, max_size=10).filter(lambda b: not _decodes(b)).map(lambda b: b'{"texts": ["' + b + b'"]}'),
    st.integers(5000, 20000).map(lambda n: b'{"texts": [' + b"9" * n + b'], "id": 1}'),
    st.text(max_size=60).map(lambda t: ("texts=" + t + "&id=&texts").encode()),
)


@st.composite
def http_requests(draw):
    path = draw(st.sampled_from(["/encode", "/v1/embeddings", "/embeddings"]))
    headers = {"content-type": draw(content_types)}
    if draw(st.booleans()):
        headers[draw(st.sampled_from(["accept", "x-request-id", "authorization", "accept-encoding"]))] = \
            draw(header_text)
    return path, headers, draw(http_bodies), draw(st.booleans())


# -- the bridge and the sockets --------------------------------------------------------------------------------------

class ReplyCollector:
    """A SUB socket subscribed to every fuzz identity, read by a thread of its own until stopped."""

    def __init__(self, context: zmq.Context, port_out: int):
        self.socket = context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        for identity in IDENTITIES:
            self.socket.setsockopt(zmq.SUBSCRIBE, identity)
        self.socket.connect(f"tcp://127.0.0.1:{port_out}")
        self.replies: list[list[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            if self.socket.poll(100):
                self.replies.append(self.socket.recv_multipart())

    def wait_for(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.replies) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


@pytest.fixture(scope="module")
def fuzzed(start_bridge, legacy_client):
    """One bridge with HTTP, sockets connected and subscribed; ``baseline_rss`` is set after the warm-up."""
    http_port = free_port()
    with start_bridge("-http_port", str(http_port), "--zmq-max-request-bytes", str(ZMQ_MAX_REQUEST_BYTES)) as bridge:
        context = zmq.Context()
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(f"tcp://127.0.0.1:{bridge.port}")
        collector = ReplyCollector(context, bridge.port_out)
        # Each identity's subscription has arrived once a command sent for it is answered.
        for i, identity in enumerate(IDENTITIES):
            push.send_multipart([identity, b"SHOW_CONFIG", b"%d" % (1000 + i), b"0"])
        collector.wait_for(len(IDENTITIES), REPLY_TIMEOUT_S)
        assert len(collector.replies) == len(IDENTITIES), "the fuzz identities never got their SHOW_CONFIG replies"
        collector.replies.clear()
        state = {"bridge": bridge, "http_port": http_port, "push": push, "collector": collector,
                 "pid": bridge.process.pid}
        with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000) as bc:
            bc.encode(["warming up the bridge", "before measuring its memory"])
        run_zmq_fuzz(state, ZMQ_WARMUP_EXAMPLES)
        run_http_fuzz(state, HTTP_WARMUP_EXAMPLES)
        state["baseline_rss"] = rss_bytes(state["pid"])
        yield state
        collector.close()
        context.destroy(0)


def run_zmq_fuzz(state: dict, examples: int) -> tuple[Counter, Counter]:
    """Send ``examples`` batches of malformed messages; returns (expected, received) replies per (identity, RID)."""
    push, collector = state["push"], state["collector"]
    collector.replies.clear()
    expected: Counter = Counter()
    sent = Counter()

    @settings(max_examples=examples, **FUZZ_SETTINGS)
    @given(batch=st.lists(malformed_messages, min_size=ZMQ_BATCH[0], max_size=ZMQ_BATCH[1]))
    def send(batch):
        for frames in batch:
            assert not (len(frames) == 4 and frames[1] in COMMANDS)  # never a real command, TERMINATION least of all
            push.send_multipart(frames)
            sent["messages"] += 1
            if answerable(frames):
                expected[(frames[0], frames[2])] += 1

    send()
    collector.wait_for(sum(expected.values()), REPLY_TIMEOUT_S)
    time.sleep(0.5)  # a second reply to one request would arrive within this
    state["zmq_sent"] = state.get("zmq_sent", 0) + sent["messages"]
    received = Counter((bytes(frames[0]), bytes(frames[-1])) for frames in collector.replies)
    return expected, received


def run_http_fuzz(state: dict, examples: int) -> Counter:
    statuses: Counter = Counter()

    @settings(max_examples=examples, **FUZZ_SETTINGS)
    @given(batch=st.lists(http_requests(), min_size=HTTP_BATCH[0], max_size=HTTP_BATCH[1]))
    def send(batch):
        for path, headers, body, chunked in batch:
            connection = http.client.HTTPConnection("127.0.0.1", state["http_port"], timeout=HTTP_TIMEOUT_S)
            try:
                if chunked:
                    connection.request("POST", path, body=iter([body[:len(body) // 2], body[len(body) // 2:]]),
                                       headers={**headers, "transfer-encoding": "chunked"}, encode_chunked=True)
                else:
                    connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                reply = response.read()
            finally:
                connection.close()
            statuses[response.status] += 1
            assert response.status < 500, (path, headers, body[:200], response.status, reply[:300])
            if response.status >= 400:  # every refusal says why, in JSON
                error = json.loads(reply)
                assert error.get("description") or error.get("error", {}).get("message") or error.get("detail"), reply

    send()
    return statuses


# -- the tests -------------------------------------------------------------------------------------------------------

def test_every_answerable_malformed_zeromq_message_gets_one_error_reply(fuzzed):
    expected, received = run_zmq_fuzz(fuzzed, ZMQ_EXAMPLES)
    assert fuzzed["zmq_sent"] >= 2000
    assert sum(expected.values()) >= 1000, "the fuzz must also send messages that can be answered"
    assert received == expected  # exactly one reply per answerable message, none for the others
    for frames in fuzzed["collector"].replies:
        assert len(frames) == 3
        header = json.loads(frames[1])
        assert header["type"] in ("InvalidRequest", "RequestTooLarge"), header
        assert header["error"] and header["dtype"].startswith("bert-serving error")
    kinds = Counter(json.loads(frames[1])["type"] for frames in fuzzed["collector"].replies)
    assert kinds["RequestTooLarge"] > 0 and kinds["InvalidRequest"] > 0, kinds
    assert fuzzed["bridge"].process.poll() is None


def test_the_log_of_the_flood_is_rate_limited(fuzzed):
    refusals = [line for line in fuzzed["bridge"].log().splitlines() if "refused a ZeroMQ message" in line]
    # One line per kind (too large, malformed frames, malformed payload) per 10 s, not one per message.
    assert len(refusals) < fuzzed["zmq_sent"] / 20, len(refusals)
    for reason in ("--zmq-max-request-bytes", "malformed request: ", "malformed payload: "):
        assert any(reason in line for line in refusals), reason


def test_a_frame_far_over_the_byte_limit_disconnects_its_sender_and_nothing_else(fuzzed):
    context = zmq.Context.instance()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    monitor = push.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    push.connect(f"tcp://127.0.0.1:{fuzzed['bridge'].port}")
    try:
        push.send_multipart([IDENTITIES[0], b"x" * (ZMQ_MAX_REQUEST_BYTES + (2 << 20)), b"7", b"1"])
        events = []
        deadline = time.monotonic() + 20
        while zmq.EVENT_DISCONNECTED not in events and time.monotonic() < deadline:
            if monitor.poll(200):
                events.append(recv_monitor_message(monitor)["event"])
        assert zmq.EVENT_DISCONNECTED in events, events
    finally:
        push.disable_monitor()
        monitor.close()
        push.close()
    assert fuzzed["bridge"].process.poll() is None


def test_malformed_http_requests_get_4xx_with_a_reason(fuzzed):
    statuses = run_http_fuzz(fuzzed, HTTP_EXAMPLES)
    assert sum(statuses.values()) >= 1000, statuses
    assert statuses[422] > 0, statuses


def test_after_the_fuzz_the_1_10_client_encodes_on_the_same_process_with_bounded_memory(fuzzed, legacy_client):
    bridge = fuzzed["bridge"]
    with legacy_client.BertClient(port=bridge.port, port_out=bridge.port_out, timeout=60000) as bc:
        vectors = bc.encode(["still serving", "after thousands of malformed requests"])
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()
    assert bridge.process.poll() is None and bridge.process.pid == fuzzed["pid"]
    growth = rss_bytes(fuzzed["pid"]) / fuzzed["baseline_rss"] - 1
    assert growth < RSS_GROWTH_LIMIT, f"the bridge's RSS grew {growth:.1%} during the fuzz"


def test_rate_limited_log_counts_what_it_held_back():
    now = [0.0]
    records = []

    class Capture:
        def warning(self, message, *args):
            records.append(message % args)

    log = RateLimitedLog(Capture(), interval_s=10, clock=lambda: now[0])
    assert log.warning("json", "bad %s", 1)
    assert not log.warning("json", "bad %s", 2) and not log.warning("json", "bad %s", 3)
    assert log.warning("frames", "other kind %s", 4)  # each kind has its own allowance
    now[0] = 10.5
    assert log.warning("json", "bad %s", 5)
    assert records == ["bad 1", "other kind 4", "bad 5 (and 2 more of this kind in the last 10s, not logged)"]
