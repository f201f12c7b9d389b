"""Cluster mode: a visionops command as a KubernetesPodOperator of the visionops image.

The pod runs ``/bin/sh -c POD_SCRIPT visionops ARGUMENTS...``: the script runs visionops with
the arguments as they are (``"$0" "$@"``: no quoting of rendered values), streams its output to
the pod log, and copies the last line, the ``--json`` result, to ``/airflow/xcom/return.json``,
where the operator's XCom sidecar collects it.

Credentials (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, S3 keys) come from the Kubernetes
Secret ``visionops-tracking`` when it exists, never from the task's arguments.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from visionops_dags import settings
from visionops_dags.tasks import DropsEmptyOptions, Resources, skip_if_reported

#: The optional Secret whose keys become every pod's environment.
CREDENTIALS_SECRET = "visionops-tracking"
#: Where the XCom sidecar looks for the result; a variable so the script can be tried outside a
#: pod (tests/dags).
XCOM_DIR_VARIABLE = "XCOM_RETURN_DIR"

_POD_SCRIPT = """\
out=$(mktemp) status_file=$(mktemp)
{ "$0" "$@"; echo $? > "$status_file"; } | tee "$out"
status=$(cat "$status_file")
last=$(awk 'NF { line = $0 } END { print line }' "$out")
case $last in
  "{"*)
    xcom_dir=${%(xcom_dir_variable)s:-/airflow/xcom}
    mkdir -p "$xcom_dir" && printf '%%s\\n' "$last" > "$xcom_dir/return.json"
    for accepted in %(accepted)s; do
      [ "$status" = "$accepted" ] && exit 0
    done ;;
  *)
    if [ "$status" = 0 ]; then
      echo "$0 exited 0 without printing a JSON result" >&2
      status=1
    fi ;;
esac
exit "$status"
"""


def pod_script(accept_exit_codes: Collection[int]) -> str:
    """The shell script that runs the command and hands its JSON line to the XCom sidecar."""
    accepted = " ".join(str(code) for code in sorted(accept_exit_codes))
    return _POD_SCRIPT % {"accepted": accepted, "xcom_dir_variable": XCOM_DIR_VARIABLE}


class VisionopsPod(DropsEmptyOptions, KubernetesPodOperator):
    """A KubernetesPodOperator whose ``arguments`` lose the options that rendered empty, and
    which ends skipped when its result's ``skip_when`` key holds a reason."""

    def __init__(self, *, skip_when: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.skip_when = skip_when

    def execute(self, context: Any) -> Any:
        return skip_if_reported(super().execute(context), self.skip_when)


def visionops_pod(
    task_id: str,
    arguments: list[str],
    env: dict[str, str],
    resources: Resources,
    accept_exit_codes: Collection[int],
    skip_when: str | None = None,
    **kwargs: Any,
) -> KubernetesPodOperator:
    """The pod task of ``visionops_task`` (see there for the arguments)."""
    limits = {"memory": resources.memory}
    if resources.gpus:
        limits["nvidia.com/gpu"] = str(resources.gpus)
    return VisionopsPod(
        task_id=task_id,
        name=f"visionops-{task_id.replace('_', '-')}",
        namespace=settings.NAMESPACE.template(),
        image=settings.IMAGE.template(),
        cmds=["/bin/sh", "-c", pod_script(accept_exit_codes), "visionops"],
        arguments=arguments,
        env_vars=env,
        env_from=[
            k8s.V1EnvFromSource(
                secret_ref=k8s.V1SecretEnvSource(name=CREDENTIALS_SECRET, optional=True)
            )
        ],
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": resources.cpu, "memory": resources.memory}, limits=limits
        ),
        labels={"app.kubernetes.io/name": "visionops", "visionops/task": task_id},
        do_xcom_push=True,
        get_logs=True,
        on_finish_action="delete_pod",
        skip_when=skip_when,
        **kwargs,
    )
