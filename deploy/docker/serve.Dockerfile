# syntax=docker/dockerfile:1
# visionops/serve: `visionops serve` and nothing it does not load: PyTorch on the CPU (the
# pytorch flavor's pt2 programs, torchao for the INT8 PT2E ones, the decoding transforms), ONNX
# Runtime (the onnx flavor) and the MLflow client. No Ray, no training extras, no OpenVINO
# (models meant for it run with --backend onnx, or from visionops/train), no MLflow server.
# Build from the repository root:
#
#   docker build -f deploy/docker/serve.Dockerfile -t visionops/serve:0.1.0 .
#   docker run --rm -p 8080:8080 -e MLFLOW_TRACKING_URI=https://mlflow.example.com \
#     -e MLFLOW_TRACKING_USERNAME -e MLFLOW_TRACKING_PASSWORD \
#     visionops/serve:0.1.0 --model-uri models:/cifar10-resnet18@production
#
# The tracking URI must be a server (http/https): the image has no SQL store.

# --- build: the virtualenv ---------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/venv
# The tested torch/torchvision pair, CPU builds, from PyTorch's index without its requirements
# (PyPI's Linux wheels are the CUDA ones; that index holds few versions of the rest); then
# what the serving path imports (visionops.serving and the modules it reaches), torch's own
# requirements and everything they need at the versions of requirements.lock, its hashes
# stripped into lock-pins.txt (pip takes no hash in a -c file). pyproject's dependencies are
# the whole platform's, so visionops itself goes in without them. boto3: registered models
# whose artifacts sit in S3 rather than behind the tracking server's proxy.
COPY constraints.txt requirements.lock ./
RUN sed -e '/--hash=/d' -e 's/ *\\$//' requirements.lock > lock-pins.txt \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps --index-url "${TORCH_INDEX_URL}" \
        -r constraints.txt \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -c lock-pins.txt \
        torch torchvision mlflow-skinny onnxruntime torchao fastapi uvicorn python-multipart \
        prometheus-client pydantic numpy pandas pillow matplotlib psutil pyyaml python-dotenv \
        rich boto3
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps -c constraints.txt -c lock-pins.txt .

# --- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="visionops/serve" \
      org.opencontainers.image.description="visionops serve: a registered classifier over HTTP" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="python:3.11-slim-bookworm"
RUN groupadd --gid 10001 visionops \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin visionops
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/visionops
EXPOSE 8080
# Live once uvicorn answers; /v2/health/ready (the model is loaded) is for load balancers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", \
         "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4)"]
# Every address of the container, on the port EXPOSE names; later flags win (argparse).
ENTRYPOINT ["visionops", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--help"]
