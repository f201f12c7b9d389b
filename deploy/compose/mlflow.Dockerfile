# The tracking server image of docker-compose.yml: MLflow with basic-auth, the PostgreSQL driver
# and the S3 client, at the versions this repository runs and tests (tests/server/test_compose.py
# keeps them equal to the virtualenv's).
FROM python:3.11-slim

RUN pip install --no-cache-dir \
        "mlflow[auth]==3.17.2" \
        "psycopg[binary]==3.3.9" \
        "boto3==1.44.8" \
    && useradd --create-home --uid 10001 mlflow

COPY --chmod=0755 mlflow-entrypoint.sh /usr/local/bin/mlflow-entrypoint.sh
USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/mlflow-entrypoint.sh"]
CMD ["mlflow", "server", "--help"]
