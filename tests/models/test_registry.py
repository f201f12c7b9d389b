"""The model registry and every registered model (new models are covered by default)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visionops.errors import ConfigError
from visionops.models import ImageClassifier, create_model, list_models, model_specs

MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)


@pytest.fixture(autouse=True)
def _one_thread():
    """Two-image batches gain nothing from intra-op threads, and on a busy machine OpenMP's
    waiting makes a MobileNet forward pass 100x slower (seconds instead of milliseconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_builtin_models_are_registered() -> None:
    names = list_models()
    assert {"resnet9", "resnet18", "mobilenet_v3_small", "mobilenet_v3_large"} <= set(names)
    assert names == sorted(names)
    assert [spec.name for spec in model_specs()] == names
    assert all(spec.description for spec in model_specs())


@pytest.mark.parametrize("small_input_stem", [True, False])
@pytest.mark.parametrize("name", list_models())
def test_forward_and_backward(name: str, small_input_stem: bool) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, small_input_stem=small_input_stem)
    model.train()
    logits = model(_batch())
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([1, 7])).backward()
    for param_name, param in model.named_parameters():
        if not param.requires_grad:  # frozen by design (airbench's whitening and BN scales)
            assert param.grad is None
            continue
        assert param.grad is not None, f"{name}: {param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}: {param_name} has non-finite gradients"
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", list_models())
def test_classifier_applies_the_normalisation(name: str) -> None:
    torch.manual_seed(0)
    backbone = create_model(name, num_classes=10)
    classifier = ImageClassifier(backbone, MEAN, STD).eval()
    images = _batch(seed=1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        wrapped = classifier(images)
        direct = backbone((images - mean) / std)
        unnormalised = backbone(images)
    assert wrapped.shape == (2, 10)
    # Freshly initialised networks can have tiny logits in eval mode (MobileNetV3's are
    # ~1e-10), so the tolerances are relative to their scale.
    scale = float(direct.abs().max())
    assert scale > 0
    assert torch.allclose(wrapped, direct, rtol=1e-4, atol=1e-5 * scale)
    assert float((wrapped - unnormalised).abs().max()) > 1e-2 * scale


def test_classifier_statistics_are_buffers() -> None:
    classifier = ImageClassifier(create_model("resnet9", 10, width_multiplier=0.25), MEAN, STD)
    buffers = dict(classifier.named_buffers())
    assert buffers["mean"].shape == (1, 3, 1, 1)
    assert torch.allclose(buffers["mean"].flatten(), torch.tensor(MEAN))
    assert torch.allclose(buffers["std"].flatten(), torch.tensor(STD))
    state = classifier.state_dict()
    assert "mean" in state and "std" in state
    assert not any(name in {"mean", "std"} for name, _ in classifier.named_parameters())


@pytest.mark.parametrize(("small_input_stem", "side"), [(True, 32), (False, 8)])
def test_resnet18_stem_resolution(small_input_stem: bool, side: int) -> None:
    model = create_model("resnet18", 10, small_input_stem=small_input_stem).eval()
    with torch.no_grad():
        out = model.maxpool(model.conv1(_batch()))
    assert out.shape == (2, 64, side, side)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large"])
@pytest.mark.parametrize(("small_input_stem", "side"), [(True, 32), (False, 16)])
def test_mobilenet_stem_resolution(name: str, small_input_stem: bool, side: int) -> None:
    model = create_model(name, 10, small_input_stem=small_input_stem).eval()
    with torch.no_grad():
        out = model.features[0](_batch())
    assert out.shape == (2, 16, side, side)


@pytest.mark.parametrize(("small_input_stem", "side"), [(True, 32), (False, 16)])
def test_resnet9_stem_resolution(small_input_stem: bool, side: int) -> None:
    model = create_model("resnet9", 10, small_input_stem=small_input_stem).eval()
    with torch.no_grad():
        assert model.stem(_batch()).shape[-2:] == (side, side)


def test_unknown_model_lists_the_registered_names() -> None:
    with pytest.raises(ConfigError) as info:
        create_model("vgg_nonexistent", num_classes=10)
    message = str(info.value)
    assert "unknown model 'vgg_nonexistent'" in message
    for name in list_models():
        assert name in message


@pytest.mark.parametrize("name", [spec.name for spec in model_specs() if not spec.supports_width])
def test_width_multiplier_on_a_fixed_width_model(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_model(name, num_classes=10, width_multiplier=0.5)
    message = str(info.value)
    assert f"model {name!r} has a fixed width" in message
    assert "resnet9" in message


def test_resnet18_has_a_fixed_width() -> None:
    assert "resnet18" in [spec.name for spec in model_specs() if not spec.supports_width]
    with pytest.raises(ConfigError, match=r"width_multiplier must be 1\.0"):
        create_model("resnet18", num_classes=10, width_multiplier=2.0)


def _num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet9_width_multiplier_scales_the_network() -> None:
    narrow = create_model("resnet9", 10, width_multiplier=0.25)
    full = create_model("resnet9", 10, width_multiplier=1.0)
    assert _num_parameters(narrow) < _num_parameters(full)
    # Convolution weights scale with width squared: a quarter width is far below half the size.
    assert _num_parameters(narrow) < _num_parameters(full) / 8
    assert narrow.fc.in_features == 128
    assert full.fc.in_features == 512


def test_each_call_builds_a_fresh_model() -> None:
    torch.manual_seed(0)
    a = create_model("resnet9", 10, width_multiplier=0.25)
    b = create_model("resnet9", 10, width_multiplier=0.25)
    assert a is not b
    assert not torch.equal(a.stem[0].weight, b.stem[0].weight)
