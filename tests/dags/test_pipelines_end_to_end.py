"""Each DAG run end to end by ``airflow dags test`` on generated data (the debug recipe), its
tasks running the visionops CLI against a temporary MLflow store, which the tests then read."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar
from urllib.parse import quote

import pytest
from dags_fixtures import Airflow
from mlflow import MlflowClient

from visionops import names

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "pipeline-model"
#: A tiny training: the debug recipe for one epoch.
TRAINING = {"recipe": "debug", "epochs": 1, "model_name": MODEL}
#: The gate with few latency runs and a budget a loaded CI machine meets.
GATE = {"model_name": MODEL, "latency_runs": 5, "latency_budget_ms": 2000.0}
PRODUCTION_TAGS = names.PROMOTION_TAG_PREFIX + "production."


def client_of(airflow: Airflow) -> MlflowClient:
    return MlflowClient(tracking_uri=airflow.tracking_uri, registry_uri=airflow.tracking_uri)


def copy_with_accuracy(client: MlflowClient, version: str, val_accuracy: float) -> str:
    """A new version of MODEL with ``version``'s weights whose source run logged
    ``val_accuracy``: a candidate or incumbent of known quality, with no training."""
    source = client.get_model_version(MODEL, version)
    experiment = client.get_run(source.run_id).info.experiment_id
    run = client.create_run(experiment, run_name=f"val-accuracy-{val_accuracy}")
    client.log_metric(run.info.run_id, names.VAL_ACCURACY, val_accuracy)
    client.set_terminated(run.info.run_id)
    # The logged model's folder, not its models:/ URI, which MLflow resolves with the global
    # tracking URI.
    artifacts = client.get_model_version_download_uri(MODEL, version)
    copy = client.create_model_version(MODEL, artifacts, run_id=run.info.run_id)
    return str(copy.version)


@pytest.fixture(scope="module")
def trained(airflow: Airflow) -> dict[str, Any]:
    """One daily_training run: the version it registered and its training run."""
    airflow.dags_test("daily_training", TRAINING)
    client = client_of(airflow)
    version = client.get_model_version_by_alias(MODEL, "candidate")
    return {"version": str(version.version), "run_id": version.run_id}


def test_daily_training_registers_an_evaluated_candidate(
    airflow: Airflow, trained: dict[str, Any]
) -> None:
    client = client_of(airflow)
    run = client.get_run(trained["run_id"])
    # A normal visionops run: the recipe's configuration, its metrics, its logged model.
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "1"
    assert names.VAL_ACCURACY in run.data.metrics
    assert run.data.tags[names.MODEL_URI_TAG]
    uri = f"models:/{MODEL}/{trained['version']}"
    evaluations = client.search_runs(
        [run.info.experiment_id], f"tags.`{names.EVALUATED_MODEL_URI_TAG}` = '{uri}'"
    )
    assert len(evaluations) == 1 and "val/accuracy" in evaluations[0].data.metrics


def test_model_evaluation_promotes_a_better_candidate_and_refuses_a_worse_one(
    airflow: Airflow, trained: dict[str, Any]
) -> None:
    client = client_of(airflow)
    candidate = trained["version"]
    accuracy = client.get_run(trained["run_id"]).data.metrics[names.VAL_ACCURACY]
    assert accuracy > 0
    # Production: the same weights, scored below the candidate.
    incumbent = copy_with_accuracy(client, candidate, accuracy / 2)
    client.set_registered_model_alias(MODEL, "production", incumbent)

    airflow.dags_test("model_evaluation", GATE)
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == candidate
    tags = client.get_model_version(MODEL, candidate).tags
    assert tags[PRODUCTION_TAGS + "decision"] == "approved"
    assert tags[PRODUCTION_TAGS + "incumbent_version"] == incumbent
    # Both were evaluated on the same split, each in a run of its own.
    evaluated = {
        r.data.tags[names.EVALUATED_MODEL_URI_TAG]
        for r in client.search_runs(
            [client.get_run(trained["run_id"]).info.experiment_id],
            f"tags.`{names.EVALUATED_MODEL_URI_TAG}` LIKE 'models:/{MODEL}/%'",
        )
    }
    assert {f"models:/{MODEL}/{candidate}", f"models:/{MODEL}/{incumbent}"} <= evaluated

    worse = copy_with_accuracy(client, candidate, accuracy / 2)
    client.set_registered_model_alias(MODEL, "candidate", worse)
    airflow.dags_test("model_evaluation", GATE)  # a refusal is a result, not a failure
    assert str(client.get_model_version_by_alias(MODEL, "production").version) == candidate
    tags = client.get_model_version(MODEL, worse).tags
    assert tags[PRODUCTION_TAGS + "decision"] == "rejected"
    assert "val/accuracy" in tags[PRODUCTION_TAGS + "reason"]


def test_hyperparameter_tuning_registers_the_best_trial_as_candidate(airflow: Airflow) -> None:
    conf = {
        "preset": "quick",
        "num_samples": 2,
        "max_epochs": 1,
        "search": "random",
        "scheduler": "fifo",
        "max_concurrent_trials": 1,
        "model_name": "pipeline-tuned",
    }
    airflow.dags_test("hyperparameter_tuning", conf)
    client = client_of(airflow)
    candidate = client.get_model_version_by_alias("pipeline-tuned", "candidate")
    trial = client.get_run(candidate.run_id)
    parent = client.get_run(trial.data.tags[names.PARENT_RUN_TAG])
    trials = client.search_runs(
        [parent.info.experiment_id], f"tags.`{names.PARENT_RUN_TAG}` = '{parent.info.run_id}'"
    )
    assert len(trials) == 2


def test_hyperparameter_tuning_skips_its_task_when_no_trial_beats_chance(
    airflow: Airflow,
) -> None:
    conf = {
        "preset": "quick",
        "num_samples": 1,
        "max_epochs": 1,
        "search": "random",
        "scheduler": "fifo",
        "chance_margin": 0.95,  # no debug trial gets 95 points above chance in an epoch
        "model_name": "pipeline-untuned",
    }
    result = airflow.dags_test("hyperparameter_tuning", conf)
    output = result.stdout + result.stderr
    # The command's one line, and the task skipped with it (so no candidate asset event).
    assert "not registered: the best trial's val/accuracy" in output
    assert "Skipping task" in output and "does not beat chance" in output
    assert "pipeline-untuned" not in {m.name for m in client_of(airflow).search_registered_models()}


class _Receiver(BaseHTTPRequestHandler):
    messages: ClassVar[list[dict[str, Any]]]  # each server's own list (see webhook)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.messages.append(
            {"content_type": self.headers["Content-Type"], "payload": json.loads(body)}
        )
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on a loopback port: its URL and the messages it got."""
    messages: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"messages": messages})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/visionops", messages
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_task_posts_a_slack_message_naming_dag_task_run_and_log(
    airflow: Airflow, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, messages = webhook
    # An unknown recipe is a user error: the task fails at once, without retries.
    result = airflow.dags_test(
        "daily_training",
        {"recipe": "no-such-recipe", "model_name": MODEL},
        extra_env={"AIRFLOW_VAR_VISIONOPS_ALERT_WEBHOOK_URL": url},
        check=False,
    )
    assert "no-such-recipe" in result.stdout + result.stderr
    assert len(messages) == 1, messages
    message = messages[0]
    assert message["content_type"] == "application/json"
    text = message["payload"]["text"]
    assert "DAG: daily_training" in text and "Task: train" in text
    run_id = next(line for line in text.splitlines() if line.startswith("Run: "))[5:]
    assert run_id.startswith("manual__")
    assert f"/dags/daily_training/runs/{quote(run_id)}/tasks/train" in text  # the log URL
    assert message["payload"]["blocks"]
