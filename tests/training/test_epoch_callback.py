"""``train(cfg, on_epoch_end=...)`` and ``parent_run_id``: the hooks Ray Tune trials use."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from visionops import names
from visionops.config import TrainConfig, with_fields
from visionops.training import EpochEnd, train


def test_each_epoch_is_reported_after_its_checkpoint_in_a_nested_run(
    tiny_config: TrainConfig, tracking_uri: str
) -> None:
    client = MlflowClient(tracking_uri)
    parent = client.create_run(client.create_experiment("parents")).info.run_id
    seen: list[EpochEnd] = []

    def on_epoch_end(end: EpochEnd) -> None:
        assert end.checkpoint.is_file()  # written before the callback runs
        seen.append(end)

    result = train(
        with_fields(tiny_config, parent_run_id=parent, log_model=False), on_epoch_end=on_epoch_end
    )

    assert [end.epoch for end in seen] == [1, 2]
    assert all(end.run_id == result.run_id and end.run_dir == result.run_dir for end in seen)
    assert seen[-1].metrics[names.VAL_ACCURACY] == result.metrics[names.VAL_ACCURACY]
    assert client.get_run(result.run_id).data.tags["mlflow.parentRunId"] == parent
