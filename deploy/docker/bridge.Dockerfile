# The bridge: the ZeroMQ (and HTTP) front end, the tokenizer and the gRPC client to Triton. Slim and non-root, with
# no TensorFlow, onnxruntime or tritonserver: it serves a model folder the export job wrote (it reads the manifest,
# vocab.txt and config.pbtxt from it) against the tritonserver(s) named by --triton-url.
#
#   docker build -f deploy/docker/bridge.Dockerfile -t bert-serving-bridge .
FROM python:3.11-slim AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge bridge
COPY exporter exporter
COPY bench bench
COPY client client
# --no-deps: the server distribution declares the export side's dependencies too (TensorFlow, onnx, ...).
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . ./client

FROM python:3.11-slim
COPY deploy/docker/bridge-requirements.txt /tmp/bridge-requirements.txt
RUN pip install --no-cache-dir -r /tmp/bridge-requirements.txt && rm /tmp/bridge-requirements.txt
COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --create-home --home-dir /home/bridge bridge
USER 10001
ENV XDG_CACHE_HOME=/home/bridge/.cache PYTHONUNBUFFERED=1
# 5555 requests and 5556 replies (ZeroMQ, the 1.10 client), 8125 HTTP (/health, /ready, /encode, ...).
EXPOSE 5555 5556 8125
ENTRYPOINT ["bert-serving-start"]
CMD ["-model_dir", "/models/minilm", "--triton-url", "triton:8001", "-http_port", "8125"]
