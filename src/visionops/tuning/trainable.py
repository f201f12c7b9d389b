"""One Ray Tune trial: the sweep's base config plus the sampled values, trained by ``train``.

The trial runs the same ``train(cfg)`` as ``visionops train``, in its own MLflow child run
(tag ``mlflow.parentRunId``), and reports every epoch to Tune with the epoch's visionops
checkpoint, so a scheduler can stop it early and a failed or interrupted trial restarts from
the checkpoint *in the same MLflow run* (the checkpoint holds the run id, and resuming it
reopens that run).

    tune.with_parameters(run_trial, base_config=config_to_dict(cfg))  # see sweep.py

The base config's ``output_dir`` is the sweep's ``trial-runs`` folder; each trial writes its
visionops run under ``trial-runs/<trial id>/<run id>/``. The child run is tagged with the Ray
node the trial ran on (``names.TRIAL_NODE_ID_TAG``, ``names.TRIAL_NODE_IP_TAG``), which on a
cluster says which machine to look at when a trial misbehaves. With ``pushgateway`` set, the
trial's progress carries the sweep's run id as its ``sweep`` label (read from that parent tag,
see ``visionops.tracking.pushgateway.run_labels``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from visionops import names
from visionops.config import (
    CONFIG_FIELDS,
    TrainConfig,
    check_field,
    with_fields,
    with_run_options,
)
from visionops.errors import ConfigError
from visionops.tracking.client import tracking_client
from visionops.training import EpochEnd, train
from visionops.training import checkpoint as ckpt
from visionops.training.checkpoint_bundle import (
    epoch_report,
    pack_checkpoint,
    unpack_checkpoint,
)

logger = logging.getLogger(__name__)

_FINISHED = "trial-finished.json"  # the final report of a trial whose train() returned


def trial_config(
    base: TrainConfig, sampled: Mapping[str, Any], run_name: str, output_dir: Path
) -> TrainConfig:
    """``base`` with the sampled fields, named after the trial, writing under ``output_dir``."""
    unknown = [field for field in sampled if field not in CONFIG_FIELDS]
    if unknown:
        raise ConfigError(f"search space names unknown config fields: {', '.join(unknown)}")
    # Searchers may hand back NumPy scalars, which the config's validation refuses.
    values = {k: v.item() if hasattr(v, "item") else v for k, v in sampled.items()}
    sampled_cfg = with_fields(base, "the search space", **values)
    check_measurable(sampled_cfg)  # a space may sample val_fraction
    return with_run_options(sampled_cfg, run_name=run_name, output_dir=str(output_dir))


def check_measurable(cfg: TrainConfig) -> None:
    """Trials are compared by their ``val/accuracy``: a config that holds out no validation
    images (``val_fraction=0``, a final training on every image) cannot be swept.

    Raises:
        ConfigError: naming val_fraction and what to do instead.
    """
    check_field(
        cfg,
        "val_fraction",
        cfg.data.val_fraction > 0,
        f"a sweep compares trials by {names.VAL_ACCURACY}, and val_fraction 0 holds out no "
        "validation images; tune with val_fraction > 0, then train the chosen configuration "
        "on every image with `visionops train --val-fraction 0`",
    )


def run_trial(config: dict[str, Any], base_config: dict[str, Any]) -> None:
    """The Tune function trainable (``config``: the sampled values, by flat field name).

    The trial's visionops runs live in ``<base output_dir>/<trial id>``, not in Tune's trial
    folder: Tune restores a sweep from its last experiment snapshot, which can be seconds
    behind, and then restarts a trial in a new folder, sometimes without the checkpoints it
    had reported. Keyed by trial id, the trial finds its newest checkpoint (and MLflow run)
    all the same, or learns that it had already finished.
    """
    from ray import tune

    context = tune.get_context()
    base = TrainConfig.model_validate(base_config)
    output_dir = base.checkpoint.output_dir / context.get_trial_id()
    cfg = trial_config(base, config, run_name=context.get_trial_name(), output_dir=output_dir)
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            unpack_checkpoint(Path(folder), output_dir)

    finished = output_dir / _FINISHED
    if finished.is_file():  # restored from a snapshot taken before the trial ended
        tune.report(json.loads(finished.read_text()))
        return
    # A restarted trial continues its own run: the newest under its output folder.
    has_run = any(ckpt.list_checkpoints(run) for run in output_dir.glob("*"))
    resume = "latest" if has_run else None

    last_epoch: list[EpochEnd] = []
    tagged: set[str] = set()

    def on_epoch_end(end: EpochEnd) -> None:
        if end.run_id is not None and end.run_id not in tagged:
            # The run exists only once train() has started it; a trial restarted on another
            # node tags its run again, so the tags name where it ran last.
            tag_node(end.run_id, cfg.tracking.tracking_uri)
            tagged.add(end.run_id)
        # Schedulers stop a trial at its last epoch's report (ASHA at max_t), which would end
        # it before train() logs the model: the last epoch is reported once train() returns.
        if end.epoch < cfg.epochs:
            report_epoch(end)
        else:
            last_epoch.append(end)

    result = train(cfg, on_epoch_end=on_epoch_end, resume=resume)
    if last_epoch:
        end = last_epoch[0]
    else:  # resumed after its last epoch: train() only finalized the run
        newest = ckpt.list_checkpoints(result.run_dir)[0]
        end = EpochEnd(
            result.epochs_completed, result.metrics, newest, result.run_dir, result.run_id
        )
    # Written before the report, which a scheduler may never let return.
    finished.write_text(json.dumps(_metrics(end)))
    report_epoch(end)


def _metrics(end: EpochEnd) -> dict[str, Any]:
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    return {**epoch_report(end), names.NODE_ID_KEY: node_id}


def tag_node(run_id: str, tracking_uri: str | None) -> None:
    """Tag the trial's MLflow run with the id and IP address of the Ray node it runs on.

    A tracking server that cannot take the tags costs them, not the trial: train() spools its
    metrics through such an outage, and the tags only say where the trial ran.
    """
    import ray

    tags = {
        names.TRIAL_NODE_ID_TAG: ray.get_runtime_context().get_node_id(),
        names.TRIAL_NODE_IP_TAG: ray.util.get_node_ip_address(),
    }
    try:
        tracking_client(tracking_uri).log_batch(
            run_id, tags=[RunTag(key, value) for key, value in tags.items()]
        )
    except (MlflowException, OSError) as error:
        logger.warning("could not tag run %s with its Ray node: %s", run_id, error)


def report_epoch(end: EpochEnd) -> None:
    """Report the epoch's metrics and checkpoint to Tune (the ``on_epoch_end`` of a trial)."""
    from ray import tune

    metrics = _metrics(end)
    # Tune copies the folder into the sweep's storage before report() returns; a temporary
    # folder next to the run lets the checkpoint be hard-linked rather than copied.
    with tempfile.TemporaryDirectory(prefix=".tune-report-", dir=end.run_dir) as folder:
        pack_checkpoint(end, Path(folder))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
