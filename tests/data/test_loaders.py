"""The training loaders (device and classic) and the device evaluation loader.

A batch is a pure function of (seed, epoch, batch index): the same on every run, on a resume
mid-epoch and, without augmentation, on either loader.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from visionops.config import DataConfig
from visionops.data import (
    DataBundle,
    build_data,
    create_eval_loader,
    create_train_loader,
    use_device_loader,
)
from visionops.data.loaders import ClassicLoader, DeviceEvalLoader, DeviceLoader
from visionops.data.transforms import Augmentation, augmentation_specs


def _unit_float(images: torch.Tensor) -> torch.Tensor:
    return TF.to_dtype(images, torch.float32, scale=True)


CPU = torch.device("cpu")
BATCH = 16
SAMPLES = 96  # 6 batches of the 270 training images
NUM_CLASSES = 10

Batches = list[tuple[torch.Tensor, torch.Tensor]]


@pytest.fixture(scope="module")
def data() -> DataBundle:
    return build_data(_cfg(), seed=0)


def _cfg(**fields: Any) -> DataConfig:
    return DataConfig(dataset="synthetic", synthetic_size=300, batch_size=BATCH, **fields)


def _loader(
    data: DataBundle,
    cfg: DataConfig,
    *,
    seed: int = 0,
    samples: int = SAMPLES,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Any:
    return create_train_loader(
        data, cfg, seed=seed, samples_per_epoch=samples, device=CPU, memory_format=memory_format
    )


def _collect(loader: Any, epoch: int, start_batch: int = 0) -> Batches:
    loader.set_epoch(epoch, start_batch=start_batch)
    return [(images.clone(), labels.clone()) for images, labels in loader]


def _assert_same(a: Batches, b: Batches) -> None:
    assert len(a) == len(b)
    for (images_a, labels_a), (images_b, labels_b) in zip(a, b, strict=True):
        assert torch.equal(images_a, images_b)
        assert torch.equal(labels_a, labels_b)


def _stack(batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


# --- determinism and resume ------------------------------------------------------------------


def test_device_loader_is_deterministic(data: DataBundle) -> None:
    cfg = _cfg(loader="device")
    first, second = _loader(data, cfg, seed=3), _loader(data, cfg, seed=3)
    assert isinstance(first, DeviceLoader)
    _assert_same(_collect(first, 2), _collect(second, 2))


def test_device_loader_order_depends_on_seed_and_epoch(data: DataBundle) -> None:
    cfg = _cfg(loader="device", augmentations=())
    reference = _stack(_collect(_loader(data, cfg, seed=3), 2))
    other_seed = _stack(_collect(_loader(data, cfg, seed=4), 2))
    other_epoch = _stack(_collect(_loader(data, cfg, seed=3), 3))
    for images, labels in (other_seed, other_epoch):
        assert not torch.equal(images, reference[0])
        assert labels.tolist() != reference[1].tolist()


def test_device_loader_augmentation_depends_on_the_epoch(data: DataBundle) -> None:
    # The same image in two epochs gets a different crop/flip at least sometimes.
    loader = _loader(data, _cfg(loader="device"))
    order0, order1 = loader.sampler.order(0).tolist(), loader.sampler.order(1).tolist()
    images0, _ = _stack(_collect(loader, 0))
    images1, _ = _stack(_collect(loader, 1))
    common = sorted(set(order0) & set(order1))
    assert common
    differs = [not torch.equal(images0[order0.index(i)], images1[order1.index(i)]) for i in common]
    assert sum(differs) > len(common) // 2


@pytest.mark.parametrize("loader_kind", ["device", "classic"])
@pytest.mark.parametrize(
    "augmentations",
    [("random_crop", "horizontal_flip"), ("random_crop", "cutout", "cutmix")],
    ids=["crop_flip", "crop_cutout_cutmix"],
)
def test_resume_yields_the_tail_of_the_epoch(
    data: DataBundle, loader_kind: str, augmentations: tuple[str, ...]
) -> None:
    samples = 80  # 5 batches
    cfg = _cfg(loader=loader_kind, augmentations=augmentations)
    full_loader = _loader(data, cfg, seed=1, samples=samples)
    expected_type = DeviceLoader if loader_kind == "device" else ClassicLoader
    assert isinstance(full_loader, expected_type)
    full = _collect(full_loader, 3)
    full_loader.set_epoch(3)
    assert len(full) == len(full_loader) == 5

    for start_batch in (1, 4):
        # A fresh loader, as after a restart from a checkpoint.
        resumed_loader = _loader(data, cfg, seed=1, samples=samples)
        resumed_loader.set_epoch(3, start_batch=start_batch)
        assert len(resumed_loader) == 5 - start_batch
        resumed = _collect(resumed_loader, 3, start_batch)
        assert len(resumed) == 5 - start_batch
        _assert_same(resumed, full[start_batch:])


@pytest.mark.parametrize("loader_kind", ["device", "classic"])
def test_set_epoch_without_start_batch_restarts_the_epoch(
    data: DataBundle, loader_kind: str
) -> None:
    loader = _loader(data, _cfg(loader=loader_kind), samples=48)
    loader.set_epoch(0, start_batch=2)
    assert len(list(loader)) == 1
    loader.set_epoch(1)
    assert len(loader) == 3
    assert len(list(loader)) == 3


# --- output format ---------------------------------------------------------------------------


@pytest.mark.parametrize("loader_kind", ["device", "classic"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_are_float_images_and_int64_labels(
    data: DataBundle, loader_kind: str, channels_last: bool
) -> None:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loader = _loader(data, _cfg(loader=loader_kind), samples=48, memory_format=memory_format)
    batches = _collect(loader, 0)
    assert len(batches) == 3
    for images, labels in batches:
        assert images.shape == (BATCH, 3, 32, 32)
        assert images.dtype == torch.float32
        assert images.min() >= 0 and images.max() <= 1
        assert images.max() > 0.5  # scaled to [0, 1], not to [0, 1/255]
        assert labels.shape == (BATCH,) and labels.dtype == torch.int64
        assert labels.min() >= 0 and labels.max() < NUM_CLASSES
        assert images.is_contiguous(memory_format=memory_format)
        if channels_last:
            assert not images.is_contiguous()


def test_device_loader_batches_are_the_sampled_images(data: DataBundle) -> None:
    loader = _loader(data, _cfg(loader="device", augmentations=()), seed=2)
    tensors = data.tensors("train")
    assert tensors is not None
    all_images, all_labels = tensors
    batches = _collect(loader, 4)
    order = loader.sampler.order(4)
    assert len(order) == SAMPLES and len(set(order.tolist())) == SAMPLES
    for batch, (images, labels) in enumerate(batches):
        indices = order[batch * BATCH : (batch + 1) * BATCH]
        assert torch.equal(images, _unit_float(all_images[indices]))
        assert torch.equal(labels, all_labels[indices])


def _assert_same_pixels(a: Batches, b: Batches) -> None:
    """Same labels, and images equal up to float rounding: the same uint8 pixels."""
    assert len(a) == len(b)
    for (images_a, labels_a), (images_b, labels_b) in zip(a, b, strict=True):
        assert torch.equal(labels_a, labels_b)
        assert torch.allclose(images_a, images_b, rtol=0, atol=1e-7)
        assert torch.equal(_to_uint8(images_a), _to_uint8(images_b))


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round().to(torch.uint8)


def test_classic_and_device_loaders_agree_without_augmentation(data: DataBundle) -> None:
    device = _loader(data, _cfg(loader="device", augmentations=()), seed=6, samples=64)
    classic = _loader(data, _cfg(loader="classic", augmentations=()), seed=6, samples=64)
    assert isinstance(device, DeviceLoader) and isinstance(classic, ClassicLoader)
    _assert_same_pixels(_collect(device, 1), _collect(classic, 1))
    _assert_same_pixels(_collect(device, 2, start_batch=3), _collect(classic, 2, start_batch=3))


def test_classic_and_device_loaders_are_bit_identical(data: DataBundle) -> None:
    device = _loader(data, _cfg(loader="device", augmentations=()), seed=6, samples=32)
    classic = _loader(data, _cfg(loader="classic", augmentations=()), seed=6, samples=32)
    _assert_same(_collect(device, 1), _collect(classic, 1))


# --- every augmentation on every loader that runs it -----------------------------------------


def _augmentation_cases() -> list[Any]:
    cases = []
    for spec in augmentation_specs():
        kinds = ["device", "classic"]
        if spec.image_stage:
            kinds = [k for k in kinds if (spec.batched if k == "device" else spec.per_image)]
        cases += [pytest.param(spec, kind, id=f"{spec.name}-{kind}") for kind in kinds]
    return cases


def test_every_augmentation_has_a_case() -> None:
    names = {case.values[0].name for case in _augmentation_cases()}
    assert names == {spec.name for spec in augmentation_specs()}
    kinds = {(case.values[0].name, case.values[1]) for case in _augmentation_cases()}
    assert ("alternating_flip", "device") in kinds and ("alternating_flip", "classic") not in kinds
    assert ("autoaugment", "classic") in kinds and ("autoaugment", "device") not in kinds
    assert {("cutmix", "device"), ("cutmix", "classic")} <= kinds


@pytest.mark.parametrize(("spec", "loader_kind"), _augmentation_cases())
def test_augmentation_runs_on_the_loader(
    data: DataBundle, spec: Augmentation, loader_kind: str
) -> None:
    cfg = _cfg(loader=loader_kind, augmentations=(spec.name,))
    loader = _loader(data, cfg, seed=4, samples=48)
    assert isinstance(loader, DeviceLoader if loader_kind == "device" else ClassicLoader)
    batches = _collect(loader, 0)
    plain = _collect(
        _loader(data, _cfg(loader=loader_kind, augmentations=()), seed=4, samples=48), 0
    )
    assert len(batches) == len(plain) == 3
    for (images, labels), (plain_images, plain_labels) in zip(batches, plain, strict=True):
        assert images.shape == (BATCH, 3, 32, 32)
        assert images.dtype == torch.float32
        assert torch.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1
        if spec.image_stage:
            assert torch.equal(labels, plain_labels)
        else:
            assert labels.shape == (BATCH, NUM_CLASSES)
            assert labels.dtype == torch.float32
            assert (labels >= 0).all()
            assert torch.allclose(labels.sum(dim=1), torch.ones(BATCH))
            _assert_mixed(spec.name, images, labels, plain_images, plain_labels)
    # The augmentation changed the images (same order, same seed as the plain loader).
    assert not torch.equal(_stack(batches)[0], _stack(plain)[0])


def _assert_mixed(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    plain_images: torch.Tensor,
    plain_labels: torch.Tensor,
) -> None:
    """The batch is mixed with itself rolled by one (torchvision's pairing) at one weight."""
    own = torch.nn.functional.one_hot(plain_labels, NUM_CLASSES).float()
    other = own.roll(1, 0)
    distinct = plain_labels != plain_labels.roll(1, 0)
    assert distinct.any()
    lam = float(labels[distinct.nonzero()[0, 0], plain_labels[distinct][0]])
    assert 0 <= lam <= 1
    assert torch.allclose(labels, lam * own + (1 - lam) * other, atol=1e-6)
    if name == "mixup":
        expected = lam * plain_images + (1 - lam) * plain_images.roll(1, 0)
        assert torch.allclose(images, expected, atol=1e-6)
    else:  # cutmix: each pixel comes from the image or its partner; the box's area is 1 - lam
        from_self = (images == plain_images).all(dim=1)
        from_other = (images == plain_images.roll(1, 0)).all(dim=1)
        assert (from_self | from_other).all()
        pasted = (~from_self).float().mean(dim=(1, 2))
        assert (pasted <= 1 - lam + 1e-6).all()
        assert pasted.max() == pytest.approx(1 - lam, abs=1e-6)


# --- configuration (the loader rules themselves: tests/training/test_checks.py) -------------


def test_auto_loader_picks_by_augmentation(data: DataBundle) -> None:
    classic_cfg = _cfg(augmentations="autoaugment")
    device_cfg = _cfg(augmentations="random_crop")
    assert classic_cfg.loader == device_cfg.loader == "auto"
    assert not use_device_loader(data, classic_cfg, CPU)
    assert use_device_loader(data, device_cfg, CPU)
    assert isinstance(_loader(data, classic_cfg), ClassicLoader)
    assert isinstance(_loader(data, device_cfg), DeviceLoader)
    # Batch-stage mixes run on both loaders, so they leave the choice to the data.
    assert use_device_loader(data, _cfg(augmentations="random_crop,cutmix"), CPU)


# --- evaluation ------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_device_eval_loader_yields_every_image_once_in_order(
    data: DataBundle, channels_last: bool
) -> None:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    # Training augmentations are configured but must not touch evaluation batches.
    cfg = _cfg(eval_batch_size=8, augmentations=("random_crop", "horizontal_flip", "cutout"))
    loader = create_eval_loader(data, "val", cfg, CPU, memory_format)
    assert isinstance(loader, DeviceEvalLoader)
    tensors = data.tensors("val")
    assert tensors is not None
    expected_images, expected_labels = tensors
    assert len(expected_images) == 30
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    assert [len(labels) for _, labels in batches] == [8, 8, 8, 6]
    images, labels = _stack(batches)
    assert images.dtype == torch.float32
    assert torch.equal(images, _unit_float(expected_images))
    assert torch.equal(labels, expected_labels)
    assert all(b[0].is_contiguous(memory_format=memory_format) for b in batches)
    # Twice over: the loader is re-iterable and yields the same batches.
    _assert_same(batches, list(loader))


def test_classic_eval_loader_matches_the_device_eval_loader(data: DataBundle) -> None:
    device = list(create_eval_loader(data, "val", _cfg(eval_batch_size=8), CPU))
    classic = list(create_eval_loader(data, "val", _cfg(eval_batch_size=8, loader="classic"), CPU))
    _assert_same_pixels(device, classic)
