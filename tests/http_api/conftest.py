"""The HTTP tests that need no special flags use the session's HTTP bridge (tests/conftest.py ``http_served``)."""
from __future__ import annotations

import shutil

import pytest

from http_calls import HttpBridge


@pytest.fixture(scope="session")
def http_bridge(http_served):
    bridge, port = http_served
    return HttpBridge(bridge=bridge, http_port=port)


@pytest.fixture(scope="session")
def zmq_client(http_bridge):
    """Our BertClient on the same bridge: the ZeroMQ front end's answers are the reference for HTTP's."""
    from bert_serving.client import BertClient

    with BertClient(port=http_bridge.bridge.port, port_out=http_bridge.bridge.port_out, timeout=60_000,
                    check_length=False) as client:
        yield client


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1000")


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through Debian's chromedriver (selenium); never downloads a browser."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromedriver are missing: `apt-get install chromium chromium-driver` "
                    "(make test does it)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()
