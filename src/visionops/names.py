"""The names visionops writes to MLflow and reads back, defined once.

Training, tuning, the promotion gate and whatever reads runs later (serving, monitoring, the
DAGs) import these rather than spelling a metric or tag again. A quantity has one name in
every place it appears: the MLflow metric, ``TrainResult.metrics``, the epoch report a tuner
receives, ``--json`` output.

Metrics of a training run, by step axis:

- per optimizer step (step = optimizer steps so far): ``train/step_loss``,
  ``train/running_accuracy``, ``train/lr``, ``train/images_per_sec``;
- per epoch (step = epochs completed): ``train/loss``, ``train/accuracy``, ``val/loss``,
  ``val/accuracy``, ``train/epoch_seconds``;
- once, after the last epoch (step = epochs): ``val/class_accuracy/<class>`` and, when the data
  has a test split, ``test/accuracy``, ``test/loss``, ``test/class_accuracy/<class>``.

A final training on every image (``val_fraction=0``) has no val split and logs no ``val/...``
metric: its accuracy is the test split's, when the data has one.

    >>> from visionops import names
    >>> names.VAL_ACCURACY, names.split_metric("test", "accuracy")
    ('val/accuracy', 'test/accuracy')
"""

from __future__ import annotations

# --- metrics ---------------------------------------------------------------------------------
STEP_LOSS = "train/step_loss"
RUNNING_ACCURACY = "train/running_accuracy"
LEARNING_RATE = "train/lr"
IMAGES_PER_SEC = "train/images_per_sec"

TRAIN_LOSS = "train/loss"
TRAIN_ACCURACY = "train/accuracy"
EPOCH_SECONDS = "train/epoch_seconds"
VAL_LOSS = "val/loss"
VAL_ACCURACY = "val/accuracy"  # what tuners optimise and the promotion gate compares

#: The metric a sweep logs on its parent run: the best trial's validation accuracy.
BEST_VAL_ACCURACY = "best/" + VAL_ACCURACY

#: MLflow's prefix for the CPU, memory and GPU metrics of ``system_metrics``.
SYSTEM_METRIC_PREFIX = "system/"


def split_metric(split: str, quantity: str) -> str:
    """``<split>/<quantity>``: ``val/accuracy``, ``test/loss``."""
    return f"{split}/{quantity}"


def class_accuracy_metric(split: str, class_name: str) -> str:
    return f"{split}/class_accuracy/{class_name}"


# --- params the config only implies (next to the flattened config) --------------------------
WORLD_SIZE_PARAM = "world_size"
GLOBAL_BATCH_PARAM = "global_batch_size"
EFFECTIVE_LR_PARAM = "effective_lr"
EFFECTIVE_WARMUP_PARAM = "effective_warmup_epochs"
EFFECTIVE_COMPILE_PARAM = "effective_compile"  # on or off: what --compile resolved to

# --- tags ------------------------------------------------------------------------------------
VERSION_TAG = "visionops.version"
TORCH_VERSION_TAG = "torch.version"
TORCHVISION_VERSION_TAG = "torchvision.version"
DEVICE_TAG = "device"
HOSTNAME_TAG = "hostname"
#: The URI of the model a run logged (``models:/m-...``), on the run.
MODEL_URI_TAG = "visionops.model_uri"
#: On an evaluation run: the model it evaluated and the run that trained it.
EVALUATED_MODEL_URI_TAG = "visionops.evaluated_model_uri"
SOURCE_RUN_ID_TAG = "visionops.source_run_id"
#: On a sweep's parent run.
SWEEP_TAG = "visionops.sweep"
RECIPE_TAG = "visionops.recipe"
BEST_RUN_ID_TAG = "visionops.best_run_id"
BEST_TRIAL_TAG = "visionops.best_trial"
#: The signal that interrupted the sweep (SIGINT, SIGTERM) while its run is KILLED; a resume
#: removes it.
SWEEP_INTERRUPTED_TAG = "visionops.sweep.interrupted"
#: Why the best trial was not registered (it did not beat chance by the margin).
SWEEP_NOT_REGISTERED_TAG = "visionops.sweep.not_registered"
#: On a sweep's trial runs: where the trial ran, and whether a scheduler stopped it early.
TRIAL_NODE_ID_TAG = "visionops.tune.node_id"
TRIAL_NODE_IP_TAG = "visionops.tune.node_ip"
TRIAL_STOPPED_EARLY_TAG = "visionops.tune.stopped_early"
#: On the run of a trial a killed driver lost (the resumed sweep ran its configuration afresh).
TRIAL_ABANDONED_TAG = "visionops.tune.abandoned"
#: Per-alias records on registered models and versions (``<prefix><alias>.<field>``).
PROMOTION_TAG_PREFIX = "visionops.promotion."
ROLLBACK_TAG_PREFIX = "visionops.rollback."
ALIAS_HISTORY_TAG_PREFIX = "visionops.alias_history."
#: The alert that rolled a version back (``visionops alerts receive``), on that version as
#: ``rollback_tag(alias, field)``: Alertmanager's ``alertname``, the alert's fingerprint and
#: ``startsAt`` (together they name one firing, so a repeat delivery is recognised), its
#: ``summary`` annotation and its ``generatorURL``.
ROLLBACK_ALERT_NAME_FIELD = "alert_name"
ROLLBACK_ALERT_FINGERPRINT_FIELD = "alert_fingerprint"
ROLLBACK_ALERT_STARTS_AT_FIELD = "alert_starts_at"
ROLLBACK_ALERT_SUMMARY_FIELD = "alert_summary"
ROLLBACK_ALERT_URL_FIELD = "alert_url"


def rollback_tag(alias: str, field: str) -> str:
    """``visionops.rollback.<alias>.<field>``: a rollback's record on a model version."""
    return f"{ROLLBACK_TAG_PREFIX}{alias}.{field}"


#: On the versions (and child runs) ``visionops optimize`` registers: which method made the
#: variant, from which version of the same registered model, for which runtime.
VARIANT_TAG = "visionops.variant"
SOURCE_VERSION_TAG = "visionops.source_version"
RUNTIME_TAG = "visionops.runtime"
#: In the MLmodel metadata of a registered ONNX variant: the runtime it is measured and served on.
RUNTIME_METADATA_KEY = "visionops.runtime"
#: In the MLmodel metadata of every model visionops logs (pt2 and ONNX): what a server needs to
#: answer an image without reading the training data.
CLASSES_METADATA_KEY = "visionops.classes"  # the class names, in the model's output order
TTA_METADATA_KEY = "visionops.tta"  # a key of training.evaluate.TTA_MODES: what evaluation applies
INPUT_SHAPE_METADATA_KEY = "visionops.input_shape"  # one image: [channels, height, width]
#: The ``python_function`` flavor of a logged pt2 model (``mlflow models serve``): its one input
#: column (base64 of PNG, JPEG or WebP bytes) and its output columns (top-1 class name, its
#: probability, every class's probability in class order).
PYFUNC_IMAGE_COLUMN = "image"
PYFUNC_LABEL_COLUMN = "label"
PYFUNC_PROBABILITY_COLUMN = "probability"
PYFUNC_PROBABILITIES_COLUMN = "probabilities"
#: The training configuration every training run logs (what rebuilds, evaluates or fine-tunes
#: the models it logged).
RUN_CONFIG_ARTIFACT = "config.yaml"
#: On an optimisation's parent run: the model it optimised.
OPTIMIZED_MODEL_URI_TAG = "visionops.optimized_model_uri"
#: MLflow's own tags that visionops sets.
PARENT_RUN_TAG = "mlflow.parentRunId"  # nests a run under another in MLflow's UI and search
GIT_COMMIT_TAG = "mlflow.source.git.commit"

#: Per variant of ``visionops optimize`` (its child run, step 0; latency at batch 1 on one
#: thread, throughput at batch 64 on every core).
VARIANT_SIZE_MB = "variant/size_mb"
VARIANT_PARAMS = "variant/params"
VARIANT_NONZERO_PARAMS = "variant/nonzero_params"
VARIANT_LATENCY_P50 = "variant/latency_ms_p50_b1"
VARIANT_LATENCY_P95 = "variant/latency_ms_p95_b1"
VARIANT_LATENCY_P99 = "variant/latency_ms_p99_b1"
VARIANT_THROUGHPUT = "variant/images_per_sec_b64"
VARIANT_ACCURACY_DELTA = "variant/accuracy_delta"

# --- registry aliases ------------------------------------------------------------------------
#: The alias a new model version gets from a sweep (and later, the scheduled pipelines).
CANDIDATE_ALIAS = "candidate"
PRODUCTION_ALIAS = "production"

# --- alert labels ----------------------------------------------------------------------------
#: What a Prometheus alerting rule labels an alert with for ``visionops alerts receive`` to roll
#: a model back: ``action="rollback"`` and the registered model and version it is about.
ALERT_ACTION_LABEL = "action"
ALERT_ACTION_ROLLBACK = "rollback"
ALERT_MODEL_NAME_LABEL = "model_name"
ALERT_MODEL_VERSION_LABEL = "model_version"
ALERT_NAME_LABEL = "alertname"  # Alertmanager's own: the alerting rule's name

# --- keys of the epoch reports tuners and Ray Train receive ---------------------------------
RUN_ID_KEY = "mlflow_run_id"
NODE_ID_KEY = "node_id"
EPOCH_KEY = "epoch"
