"""What a logged model's MLmodel tells a server: class names, test-time augmentation, image
shape, and an image pyfunc next to the pt2 program; older MLmodels fall back to the signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

from visionops import names
from visionops.config import TrainConfig, with_fields
from visionops.data import build_data
from visionops.tracking.client import (
    download_model,
    image_shape,
    model_classes,
    model_metadata,
    model_tta,
)
from visionops.tracking.model_logging import PYFUNC_LOADER_MODULE, load_pytorch_model
from visionops.training import train


def test_a_trained_model_records_its_classes_tta_and_image_shape(
    tiny_config: TrainConfig, tracking_uri: str, tmp_path: Path
) -> None:
    cfg = with_fields(tiny_config, epochs=1, register_as="meta-check", tta="flip")
    result = train(cfg)
    assert result.registered_version == 1
    model_dir = download_model("models:/meta-check/1", tracking_uri, tmp_path / "model")
    metadata = model_metadata(model_dir)

    classes = build_data(cfg.data, cfg.seed).classes
    assert metadata.metadata is not None
    assert metadata.metadata[names.CLASSES_METADATA_KEY] == list(classes)
    assert metadata.metadata[names.TTA_METADATA_KEY] == "flip"
    assert metadata.metadata[names.INPUT_SHAPE_METADATA_KEY] == [3, 32, 32]
    assert model_classes(metadata) == tuple(classes)
    assert model_tta(metadata) == "flip"
    assert image_shape(metadata) == (3, 32, 32)

    # mlflow models serve enforces the signature: it describes the pyfunc, a string column.
    assert metadata.signature is not None
    assert metadata.signature.inputs.to_dict() == [
        {"type": "string", "name": names.PYFUNC_IMAGE_COLUMN, "required": True}
    ]
    assert metadata.saved_input_example_info is not None
    example = metadata.load_input_example(str(model_dir))
    assert list(example.columns) == [names.PYFUNC_IMAGE_COLUMN] and len(example) >= 1
    pyfunc = metadata.flavors["python_function"]
    assert pyfunc["loader_module"] == PYFUNC_LOADER_MODULE == "visionops.serving.pyfunc"
    for environment in pyfunc["env"].values():
        assert (model_dir / environment).is_file(), environment
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert any(line.startswith("visionops==") for line in requirements), requirements
    assert any(line.startswith("torch==") for line in requirements), requirements

    # The pytorch flavor loads as before: a torch.export program taking float NCHW images.
    assert metadata.flavors["pytorch"]["model_data"] == "data"
    program = load_pytorch_model(str(model_dir))
    with torch.no_grad():
        assert program(torch.rand(5, 3, 32, 32)).shape == (5, len(classes))


def _tensor_signature_model(metadata: dict[str, object] | None = None) -> Model:
    """An MLmodel as visionops logged pt2 models before the image pyfunc (and logs ONNX ones)."""
    float32 = np.dtype("float32")
    signature = ModelSignature(
        inputs=Schema([TensorSpec(float32, (-1, 3, 24, 24))]),
        outputs=Schema([TensorSpec(float32, (-1, 4))]),
    )
    model = Model(signature=signature)
    model.metadata = metadata
    return model


def test_an_mlmodel_without_the_metadata_falls_back_to_its_tensor_signature() -> None:
    old = _tensor_signature_model()
    assert image_shape(old) == (3, 24, 24)
    assert model_classes(old) is None
    assert model_tta(old) == "none"
    assert image_shape(Model()) is None

    # The metadata, when present, is what counts (an image pyfunc's signature has no shape).
    new = _tensor_signature_model(
        {
            names.INPUT_SHAPE_METADATA_KEY: [3, 16, 16],
            names.CLASSES_METADATA_KEY: ["a", "b"],
            names.TTA_METADATA_KEY: "flip_shift",
        }
    )
    assert image_shape(new) == (3, 16, 16)
    assert model_classes(new) == ("a", "b")
    assert model_tta(new) == "flip_shift"
    assert (
        image_shape(_tensor_signature_model({names.INPUT_SHAPE_METADATA_KEY: [3, 0, 16]})) is None
    )


@pytest.mark.parametrize("wrong", [["a", "b"], ["a", "b", "c", "d", "e"]])
def test_class_names_that_do_not_match_the_outputs_are_refused(
    wrong: list[str], tracking_uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    from visionops.models import ImageClassifier, create_model
    from visionops.tracking.model_logging import log_model

    model = ImageClassifier(
        create_model("resnet9", 4, width_multiplier=0.125), (0.5,) * 3, (0.25,) * 3
    )
    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("wrong-classes")).info.run_id
    with pytest.raises(ValueError, match=f"4 outputs but {len(wrong)} class names"):
        log_model(
            model, torch.rand(2, 3, 16, 16), None, run_id, tracking_uri, classes=wrong, tta="none"
        )


def test_the_logged_model_belongs_to_its_runs_experiment(
    tiny_config: TrainConfig, tracking_uri: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    result = train(with_fields(tiny_config, epochs=1))
    assert result.model_uri is not None and result.run_id is not None
    client = MlflowClient(tracking_uri)
    logged = client.get_logged_model(result.model_uri.removeprefix("models:/"))
    assert logged.experiment_id == client.get_run(result.run_id).info.experiment_id != "0"
    assert not (tmp_path / "mlruns" / "0").exists()  # nothing in the Default experiment's folder
