"""Test-time augmentation, the three optimizer groups, the one-cycle bounds and airbench's
data-initialised whitening."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionops.config import DataConfig, OptimConfig
from visionops.data import build_data, create_eval_loader
from visionops.models import create_model
from visionops.models.airbench import _WHITEN_EPS, AirBench
from visionops.models.classifier import ImageClassifier
from visionops.training.evaluate import TTA_MODES, evaluate
from visionops.training.optim import create_optimizer, create_scheduler
from visionops.training.runtime import Runtime

CPU_FP32 = Runtime(torch.device("cpu"), autocast_dtype=None, channels_last=False)


class _LeftHalf(nn.Module):
    """Logits from the left half of the image only: not mirror-symmetric."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(3 * 8 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[..., : x.shape[-1] // 2].flatten(1))


class _Symmetric(nn.Module):
    """Logits from mirror-invariant features (row sums): model(x) == model(x.flip(-1))."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(3 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.sum(dim=-1).flatten(1))


def _images(count: int = 4) -> torch.Tensor:
    return torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(1))


# --- TTA -------------------------------------------------------------------------------------


def test_no_tta_is_the_model() -> None:
    model, x = _LeftHalf(), _images()
    assert torch.equal(TTA_MODES["none"](model)(x), model(x))


def test_flip_tta_averages_the_image_and_its_mirror() -> None:
    model, x = _LeftHalf(), _images()
    with torch.no_grad():
        tta = TTA_MODES["flip"](model)(x)
        plain, mirrored = model(x), model(x.flip(-1))
    assert not torch.allclose(plain, mirrored)  # the model does see the flip
    assert torch.allclose(tta, (plain + mirrored) / 2, atol=1e-6)
    assert not torch.allclose(tta, plain)


def test_flip_tta_leaves_a_mirror_symmetric_model_unchanged() -> None:
    model, x = _Symmetric(), _images()
    with torch.no_grad():
        assert torch.allclose(model(x), model(x.flip(-1)), atol=1e-6)
        assert torch.allclose(TTA_MODES["flip"](model)(x), model(x), atol=1e-6)


def test_flip_shift_tta_formula() -> None:
    model, x = _LeftHalf(), _images()
    height, width = x.shape[-2:]

    def flip(images: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(images) + model(images.flip(-1)))

    with torch.no_grad():
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        up_left, down_right = padded[..., :height, :width], padded[..., 2:, 2:]
        # The shifts are real 1-pixel diagonal translations of the image.
        assert torch.equal(up_left[..., 1:, 1:], x[..., :-1, :-1])
        assert torch.equal(down_right[..., :-1, :-1], x[..., 1:, 1:])
        expected = 0.5 * flip(x) + 0.5 * (flip(up_left) + flip(down_right)) / 2
        got = TTA_MODES["flip_shift"](model)(x)
    assert got.shape == (4, 5)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, flip(x), atol=1e-4)


@pytest.mark.parametrize("tta", sorted(TTA_MODES))
def test_evaluate_with_tta_on_a_real_model(tta: str) -> None:
    cfg = DataConfig(dataset="synthetic", synthetic_size=200, eval_batch_size=7)
    data = build_data(cfg, seed=0)
    torch.manual_seed(0)
    backbone = create_model(
        "resnet9", data.num_classes, small_input_stem=True, width_multiplier=0.125
    )
    model = ImageClassifier(backbone, data.mean, data.std).eval()
    loader = create_eval_loader(data, "val", cfg, torch.device("cpu"))
    result = evaluate(model, loader, CPU_FP32, data.num_classes, tta=tta)
    plain = evaluate(model, loader, CPU_FP32, data.num_classes)
    assert result.num_images == plain.num_images == 20
    assert 0.0 <= result.accuracy <= 1.0
    assert result.loss > 0
    assert result.confusion.shape == (10, 10)
    # The TTA predictions are what evaluate scored.
    with torch.no_grad():
        predict = TTA_MODES[tta](model)
        correct = sum(int((predict(x).argmax(1) == y).sum()) for x, y in loader)
    assert result.accuracy == pytest.approx(correct / 20)


def test_evaluate_flip_tta_equals_plain_for_a_symmetric_model() -> None:
    model = _Symmetric()
    x = _images(12)
    batches = [(x[:5], torch.arange(5) % 5), (x[5:], torch.arange(7) % 5)]
    plain = evaluate(model, batches, CPU_FP32, 5)
    flipped = evaluate(model, batches, CPU_FP32, 5, tta="flip")
    assert torch.equal(plain.confusion, flipped.confusion)
    assert flipped.loss == pytest.approx(plain.loss, rel=1e-5)


# --- optimizer groups ------------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4, 2, bias=True)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _group_of(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict | None:
    found = [g for g in optimizer.param_groups if any(p is param for p in g["params"])]
    assert len(found) <= 1, "a parameter is in two groups"
    return found[0] if found else None


@pytest.mark.parametrize("norm_weight_decay", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_norm_parameters_get_a_scaled_lr(norm_weight_decay: bool, optimizer: str) -> None:
    net = _Net()
    cfg = OptimConfig(
        optimizer=optimizer,
        lr=0.5,
        weight_decay=0.0128,
        norm_lr_scale=64,
        norm_weight_decay=norm_weight_decay,
    )
    opt = create_optimizer(net, cfg)
    assert [g["name"] for g in opt.param_groups] == ["weights", "norm", "biases"]
    for weight in (net.conv.weight, net.head.weight):
        group = _group_of(opt, weight)
        assert group is not None
        assert group["lr"] == 0.5 and group["weight_decay"] == 0.0128
    for norm in (net.bn.weight, net.bn.bias, net.gn.weight, net.gn.bias):
        group = _group_of(opt, norm)
        assert group is not None
        assert group["lr"] == pytest.approx(64 * 0.5)
        assert group["weight_decay"] == (pytest.approx(0.0128 / 64) if norm_weight_decay else 0.0)
    for bias in (net.conv.bias, net.head.bias):
        group = _group_of(opt, bias)
        assert group is not None
        assert group["lr"] == 0.5 and group["weight_decay"] == 0.0
    for frozen in net.frozen.parameters():
        assert _group_of(opt, frozen) is None
    grouped = [p for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == 8


def test_airbench_groups_skip_frozen_parameters() -> None:
    backbone = AirBench(10, width_multiplier=0.125)
    model = ImageClassifier(backbone, (0.5,) * 3, (0.25,) * 3)
    opt = create_optimizer(model, OptimConfig(lr=1.5, norm_lr_scale=64, norm_weight_decay=True))
    frozen = [p for p in model.parameters() if not p.requires_grad]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6
    assert any(p is backbone.whiten.weight for p in frozen)
    assert all(any(p is m.weight for p in frozen) for m in norms)
    for param in frozen:
        assert _group_of(opt, param) is None
    norm_group = _group_of(opt, norms[0].bias)
    assert norm_group is not None and norm_group["lr"] == pytest.approx(96.0)
    assert {id(p) for p in norm_group["params"]} == {id(m.bias) for m in norms}
    whiten_bias_group = _group_of(opt, backbone.whiten.bias)
    assert whiten_bias_group is not None
    assert whiten_bias_group["lr"] == 1.5 and whiten_bias_group["weight_decay"] == 0.0
    grouped = {id(p) for g in opt.param_groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


def test_onecycle_bounds_per_group() -> None:
    cfg = OptimConfig(
        lr=1.5,
        schedule="onecycle",
        warmup_epochs=2.3,
        lr_start_fraction=0.2,
        lr_end_fraction=0.07,
        norm_lr_scale=64,
    )
    net = _Net()
    opt = create_optimizer(net, cfg)
    scheduler = create_scheduler(opt, cfg, steps_per_epoch=10, epochs=10)
    history: list[list[float]] = []
    for _ in range(100):
        history.append([g["lr"] for g in opt.param_groups])
        opt.step()
        scheduler.step()
    for index, group in enumerate(opt.param_groups):
        peak = 1.5 * (64 if group["name"] == "norm" else 1)
        lrs = [step[index] for step in history]
        assert lrs[0] == pytest.approx(0.2 * peak)
        assert max(lrs) == pytest.approx(peak)
        assert lrs.index(max(lrs)) == 22  # the end of the 23-step warm-up
        assert lrs[-1] == pytest.approx(0.07 * peak)
        assert min(lrs) == pytest.approx(0.07 * peak)
    norm_index = next(i for i, g in enumerate(opt.param_groups) if g["name"] == "norm")
    assert history[0][norm_index] == pytest.approx(64 * 0.2 * 1.5)


# --- airbench whitening ----------------------------------------------------------------------


def test_airbench_init_from_data_whitens_patches() -> None:
    data = build_data(DataConfig(dataset="synthetic", synthetic_size=100), seed=0)
    images = data.sample_images(64)
    mean = images.mean(dim=(0, 2, 3), keepdim=True)
    std = images.std(dim=(0, 2, 3), keepdim=True)
    normalised = (images - mean) / std

    def second_moment(x: torch.Tensor) -> torch.Tensor:
        flat = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).double()
        return flat.T @ flat / len(flat)

    patches = normalised.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5)
    patch_moment = second_moment(patches.reshape(-1, 12, 1, 1))
    off_diagonal = patch_moment - torch.diag(patch_moment.diag())
    assert off_diagonal.abs().max() > 0.3  # neighbouring pixels are strongly correlated

    model = AirBench(10, width_multiplier=0.125)
    model.init_from_data(normalised)
    weight = model.whiten.weight
    assert weight.shape == (24, 3, 2, 2)
    assert not weight.requires_grad
    assert torch.equal(weight[12:], -weight[:12])

    out = F.conv2d(normalised, weight)  # the filters alone, without the (trainable) bias
    assert out.shape == (64, 24, 31, 31)
    assert torch.equal(out[:, 12:], -out[:, :12])
    moment = second_moment(out[:, :12])
    eigenvalues = torch.linalg.eigvalsh(patch_moment).flip(0)  # largest first, as the filters
    expected = eigenvalues / (eigenvalues + _WHITEN_EPS)
    assert torch.allclose(moment.diag(), expected, atol=1e-3)
    off = moment - torch.diag(moment.diag())
    assert off.abs().max() < 1e-4 * moment.diag().max()
