# syntax=docker/dockerfile:1
# visionops/server: the team tracking server, `mlflow server` with basic-auth, the PostgreSQL
# driver and the S3 client, at the versions this repository runs and tests (requirements.lock).
# deploy/compose builds it; build it alone from the repository root:
#
#   docker build -f deploy/docker/server.Dockerfile -t visionops/server:0.1.0 .
#
# server-entrypoint.sh turns the secret files named by ADMIN_PASSWORD_FILE, FLASK_SECRET_KEY_FILE
# and POSTGRES_PASSWORD_FILE into MLflow's auth config and environment (its header says how),
# then runs the command: `mlflow server ...` as `visionops server start` runs it.

# --- build: the virtualenv ---------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Every version is requirements.lock's, its hashes stripped into lock-pins.txt (pip takes no
# hash in a -c file).
COPY requirements.lock ./
RUN sed -e '/--hash=/d' -e 's/ *\\$//' requirements.lock > lock-pins.txt \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c lock-pins.txt "mlflow[auth]" \
        "psycopg[binary]" boto3

# --- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="visionops/server" \
      org.opencontainers.image.description="MLflow server with basic-auth, PostgreSQL and S3" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="python:3.11-slim-bookworm"
RUN groupadd --gid 10001 mlflow \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin mlflow
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/server-entrypoint.sh /usr/local/bin/server-entrypoint.sh
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=12 \
    CMD ["python", "-c", \
         "import urllib.request as u; u.urlopen('http://127.0.0.1:5000/health', timeout=3)"]
ENTRYPOINT ["/usr/local/bin/server-entrypoint.sh"]
CMD ["mlflow", "server", "--help"]
