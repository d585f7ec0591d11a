"""/dashboard in headless Chromium (issue 8, Done when 4): after known traffic on both front ends, the page shows
the numbers /status/server and /status/activity return; a screenshot is saved under the test's tmp dir.

Needs Debian's chromium and chromium-driver (the Makefile's test target installs them)."""
from __future__ import annotations

import re
import time

import pytest

from harness import free_port
from http_calls import HttpBridge, call

pytestmark = pytest.mark.slow


def text(browser, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id).text


def test_dashboard_renders_the_servers_numbers(http_bridge, zmq_client, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    for size in (2, 3, 5):
        zmq_client.encode([f"zeromq sentence {i}" for i in range(size)])
    for size in (4, 1):
        assert call(f"{http_bridge.url}/encode", "POST",
                    json_body={"id": size, "texts": [f"http sentence {i}" for i in range(size)]}).status == 200
    call(f"{http_bridge.url}/encode", "POST", json_body={"id": 0, "texts": []})  # one InvalidRequest
    server = call(f"{http_bridge.url}/status/server").json()
    statistic = server["statistic"]
    activity = call(f"{http_bridge.url}/status/activity").json()

    browser.get(f"{http_bridge.url}/dashboard")
    WebDriverWait(browser, 30).until(lambda b: text(b, "num-data-request") == str(statistic["num_data_request"]))
    WebDriverWait(browser, 30).until(lambda b: text(b, "ready") == "ready")
    screenshot = tmp_path / "dashboard.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000

    assert text(browser, "num-total-seq") == str(statistic["num_total_seq"])
    assert text(browser, "num-active-client") == str(statistic["num_active_client"]) != "0"
    assert text(browser, "num-total-client") == str(statistic["num_total_client"])
    assert text(browser, "server-version") == server["server_version"] == "1.10.0"
    assert text(browser, "model") == activity["model"]
    assert text(browser, "pooling") == "REDUCE_MEAN"
    assert text(browser, "normalize") == "no"
    assert text(browser, "max-seq-len") == str(server["max_seq_len"]) == "25"
    assert text(browser, "output-dim") == "384"
    assert int(text(browser, "num-errors")) == sum(activity["errors"].values()) >= 1
    assert text(browser, "latency-p50").endswith(" ms")
    models = [row.split() for row in text(browser, "models").splitlines()[2:]]
    assert models == [[card["id"], card["task"], card["semantics"], "384", "25", "yes",
                       str(card["requests"]["success"]), str(card["requests"]["error"])] for card in activity["models"]]
    rows = {row.split()[0]: row.split()[1:] for row in text(browser, "frontends").splitlines()[2:]}
    for frontend in ("zmq", "http", "openai"):
        assert rows[frontend] == [str(activity["requests"][frontend]["success"]),
                                  str(activity["requests"][frontend]["error"])]
    # The chart was drawn: the sentences line and its fill cover some of the canvas.
    painted = browser.execute_script(
        "const c = document.getElementById('sentences-chart');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;")
    assert painted > 1000
    assert browser.execute_script("return document.querySelectorAll('script[src^=\"http\"], link[href^=\"http\"]')"
                                  ".length") == 0


@pytest.fixture(scope="module")
def auto_http_bridge(start_bridge):
    """The packaged model with -pooling_strategy AUTO (its export is the one tests/bridge reuse) and HTTP."""
    port = free_port()
    with start_bridge("-pooling_strategy", "AUTO", "-http_port", str(port)) as bridge:
        yield HttpBridge(bridge=bridge, http_port=port)


def test_dashboard_says_auto_normalized_and_idle_once_the_load_stops(auto_http_bridge, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    url = auto_http_bridge.url
    browser.get(f"{url}/dashboard")
    WebDriverWait(browser, 30).until(lambda b: text(b, "pooling") != "–")
    assert text(browser, "pooling") == "AUTO: REDUCE_MEAN (sentence-transformers 'mean')"
    assert text(browser, "normalize") == "yes (unit length)"
    assert text(browser, "pooling-layer") == "-1" and text(browser, "max-seq-len") == "256"

    def sentences_now(b) -> float | None:
        match = re.fullmatch(r"now (\d+\.\d)/s", text(b, "sentences-rate"))
        return float(match.group(1)) if match else None

    deadline = time.monotonic() + 60
    while not sentences_now(browser):  # load until the page has shown it
        assert time.monotonic() < deadline, text(browser, "sentences-rate")
        assert call(f"{url}/encode", "POST", json_body={"id": 1, "texts": ["load"] * 8}).status == 200
        time.sleep(0.2)
    # No more load: within a bucket (5 s) and a poll (2 s) the figure says so, instead of keeping the last rate.
    WebDriverWait(browser, 20).until(lambda b: text(b, "sentences-rate") == "idle" == text(b, "requests-rate"))


def test_docs_page_renders_every_operation(http_bridge, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    spec = call(f"{http_bridge.url}/openapi.json").json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    browser.get(f"{http_bridge.url}/docs")
    WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock")) == operations)
    browser.save_screenshot(str(tmp_path / "docs.png"))
    summaries = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/encode", "/v1/embeddings", "/metrics", "/ready"} <= summaries
    # Everything the page loaded came from the bridge itself.
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) == {http_bridge.url}
