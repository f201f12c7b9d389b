"""One operator factory: a visionops command as a task, on the Airflow worker or in a pod.

    train = visionops_task(
        "train",
        ["train", "--recipe", param("recipe"), "--register-as", param("model_name"), "--json"],
        resources=Resources(cpu="4", memory="8Gi"),
        execution_timeout=timedelta(hours=2),
    )

The Airflow Variable ``visionops_mode`` (read when the file is parsed) chooses the operator:

local    ``VisionopsCommand`` runs ``<visionops_executable> ARGUMENTS`` in
         ``visionops_work_dir``, as an argument vector (no shell, so no quoting of values).
cluster  a ``KubernetesPodOperator`` runs ``visionops ARGUMENTS`` in the ``visionops_image``
         with the task's CPU, memory and GPU requests (``visionops_dags.pod``).

Either way the command's ``--json`` line, the last line of its standard output, becomes the
task's XCom (a dict) for the tasks after it; the tracking URI reaches the command as
``MLFLOW_TRACKING_URI``, never as a flag, with a short retry policy for MLflow's client
(``RETRY_POLICY``: a task fails in seconds when the server is down, and Airflow retries it);
and an option whose value renders empty (a param left
at its "use the recipe's" default) is dropped, so the command falls back to its own default.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from visionops_dags import settings

#: visionops exits 2 for a user error (a bad flag, recipe, model name, data folder or store):
#: a retry would repeat it, so the task fails at once (local mode; a pod's exit code is not
#: told apart from a crash).
EXIT_USER_ERROR = 2
#: Variables of the Airflow worker that stay out of the command's environment: Airflow's own
#: settings (connections and variables may hold secrets) and the worker interpreter's paths.
_WORKER_ONLY_PREFIXES = ("AIRFLOW", "_AIRFLOW")
_WORKER_ONLY_NAMES = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
#: visionops.env.SHORT_RETRY_POLICY, spelled out (this package runs in Airflow's virtualenv,
#: without visionops; tests/dags checks the two agree). MLflow's own defaults retry a server
#: that is down for about 4 minutes per call; Airflow's task retries are the slower loop. A
#: variable set in the worker's environment (at parse time) wins.
RETRY_POLICY = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


@dataclass(frozen=True)
class Resources:
    """What the task's pod requests in cluster mode (memory and GPUs are its limits too)."""

    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = 0


def param(name: str) -> str:
    """The template of DAG param ``name``, empty when the param is null."""
    return f"{{{{ params.{name} if params.{name} is not none else '' }}}}"


def xcom(task_id: str, *keys: str) -> str:
    """The template of a value in the JSON result of task ``task_id``:
    ``xcom("train", "registered_model", "version")``."""
    path = "".join(f"[{key!r}]" for key in keys)
    return f"{{{{ ti.xcom_pull(task_ids={task_id!r}){path} }}}}"


def drop_empty_options(arguments: Sequence[str]) -> list[str]:
    """``arguments`` without the ``--option VALUE`` pairs whose VALUE rendered empty."""
    kept: list[str] = []
    index = 0
    while index < len(arguments):
        token = arguments[index]
        if token.startswith("--") and index + 1 < len(arguments) and arguments[index + 1] == "":
            index += 2
            continue
        kept.append(token)
        index += 1
    return kept


def visionops_task(
    task_id: str,
    arguments: Sequence[Any],
    *,
    resources: Resources = Resources(),
    accept_exit_codes: Collection[int] = (0,),
    skip_when: str | None = None,
    **kwargs: Any,
) -> BaseOperator:
    """The task that runs ``visionops ARGUMENTS`` (each templated) in the deployment mode.

    Args:
        task_id: the task's id (and the pod's name in cluster mode).
        arguments: the command line after ``visionops``; Jinja templates allowed in each.
        resources: the pod's requests in cluster mode (local mode runs on the worker as is).
        accept_exit_codes: exit codes that count as success, provided the command printed its
            JSON line (``visionops promote`` exits 1 for a rejection it has recorded).
        skip_when: a key of the JSON result that, when it holds a reason, ends the task skipped
            with that reason (``not_registered``: a sweep that registered nothing moves no
            ``candidate``, so its outlets get no event).
        kwargs: BaseOperator arguments: retries, execution_timeout, trigger_rule, outlets ...
    """
    argv = [str(argument) for argument in arguments]
    env = {"MLFLOW_TRACKING_URI": settings.TRACKING_URI.template()}
    env |= {name: os.environ.get(name) or value for name, value in RETRY_POLICY.items()}
    accepted = frozenset({0, *accept_exit_codes})
    if settings.deployment_mode() == settings.CLUSTER:
        from visionops_dags.pod import visionops_pod  # the Kubernetes client: cluster mode only

        return visionops_pod(task_id, argv, env, resources, accepted, skip_when, **kwargs)
    return VisionopsCommand(
        task_id=task_id,
        arguments=argv,
        env=env,
        accept_exit_codes=accepted,
        skip_when=skip_when,
        **kwargs,
    )


class DropsEmptyOptions:
    """Mixin of an operator with templated ``arguments``: once they are rendered, the options
    whose value is empty go."""

    arguments: list[str]

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)  # type: ignore[misc]
        self.arguments = drop_empty_options(self.arguments)


class VisionopsCommand(DropsEmptyOptions, BaseOperator):
    """Run a command of the visionops virtualenv on the worker; its JSON line is the XCom."""

    template_fields: ClassVar[tuple[str, ...]] = ("executable", "arguments", "env", "cwd")
    template_fields_renderers: ClassVar[dict[str, str]] = {"arguments": "py", "env": "json"}

    def __init__(
        self,
        *,
        arguments: list[str],
        env: Mapping[str, str],
        executable: str = settings.EXECUTABLE.template(),
        cwd: str = settings.WORK_DIR.template(),
        accept_exit_codes: Collection[int] = (0,),
        skip_when: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.skip_when = skip_when
        self.arguments = arguments
        self.env = dict(env)
        self.executable = executable
        self.cwd = cwd
        self.accept_exit_codes = frozenset(accept_exit_codes)
        self._process: subprocess.Popen[str] | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        argv = [self._visionops_path(), *self.arguments]
        Path(self.cwd).mkdir(parents=True, exist_ok=True)
        self.log.info("running in %s: %s", self.cwd, shlex.join(argv))
        # stderr (progress, warnings, errors) goes straight to the task log; stdout is read
        # here because its last line is the result.
        self._process = subprocess.Popen(
            argv,
            cwd=self.cwd,
            env=self._environment(argv[0]),
            stdout=subprocess.PIPE,
            text=True,
            errors="backslashreplace",
            start_new_session=True,  # on_kill stops the command's own children too
        )
        assert self._process.stdout is not None
        last_line = ""
        for line in self._process.stdout:
            line = line.rstrip("\n")
            self.log.info("%s", line)
            if line.strip():
                last_line = line
        exit_code = self._process.wait()
        result = command_result(
            f"visionops {self.arguments[0]}", exit_code, last_line, self.accept_exit_codes
        )
        return skip_if_reported(result, self.skip_when)

    def on_kill(self) -> None:
        """Called on an execution timeout or when someone stops the task: end the command."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)

    def _visionops_path(self) -> str:
        path = Path(self.executable)
        if not path.is_file():
            raise AirflowFailException(
                f"{path} does not exist: set the Airflow Variable {settings.EXECUTABLE.key} to "
                "the visionops command of a virtualenv (`make install` creates .venv/bin/visionops)"
            )
        return str(path)

    def _environment(self, program: str) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(_WORKER_ONLY_PREFIXES) and name not in _WORKER_ONLY_NAMES
        }
        # Whatever the command starts by name (torchrun, Ray's workers) comes from its own
        # virtualenv, not from Airflow's.
        env["PATH"] = os.pathsep.join([str(Path(program).parent), env.get("PATH", "")])
        env.update(self.env)
        return env


def command_result(
    command: str, exit_code: int, last_line: str, accept_exit_codes: Collection[int]
) -> dict[str, Any]:
    """The JSON result of a finished command, or the exception that fails its task."""
    result = _json_object(last_line)
    if exit_code in accept_exit_codes and result is not None:
        return result
    if exit_code == 0:
        raise AirflowException(
            f"{command} exited 0 without printing a JSON result; its last line: {last_line!r}"
        )
    if exit_code == EXIT_USER_ERROR:
        raise AirflowFailException(
            f"{command} refused its input (exit {exit_code}, not retried): see its error above"
        )
    raise AirflowException(f"{command} failed with exit code {exit_code}: see its output above")


def skip_if_reported(result: dict[str, Any], key: str | None) -> dict[str, Any]:
    """``result``, unless its ``key`` holds a reason: then the task ends skipped, with that
    reason in its log (a skipped task emits no event for its outlets)."""
    reason = result.get(key) if key else None
    if reason:
        raise AirflowSkipException(str(reason))
    return result


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
