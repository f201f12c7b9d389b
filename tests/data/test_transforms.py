"""Transform pipelines and the augmentation registry."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from visionops.config import DataConfig
from visionops.data import transforms
from visionops.data.transforms import (
    Augmentation,
    augmentation_specs,
    build_transform,
    list_augmentations,
    register_augmentation,
)
from visionops.errors import ConfigError


def _augmenting(size: int, *names: str) -> v2.Transform:
    return build_transform(DataConfig(image_size=size, augmentations=names), size)


def _random_image(seed: int = 0, height: int = 32, width: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=generator).to(torch.uint8)


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round().to(torch.uint8)


def _check_output(image: torch.Tensor, size: int) -> None:
    assert image.shape == (3, size, size)
    assert image.dtype == torch.float32
    assert float(image.min()) >= 0.0
    assert float(image.max()) <= 1.0


def test_uint8_tensor_is_scaled_to_unit_float() -> None:
    source = _random_image()
    out = build_transform(None, 32)(source)
    _check_output(out, 32)
    assert torch.allclose(out, source.float() / 255, atol=1e-6)
    assert torch.equal(_as_uint8(out), source)


def test_pil_image_is_converted_to_chw_float() -> None:
    source = _random_image(1)
    pil = Image.fromarray(source.permute(1, 2, 0).numpy())
    out = build_transform(None, 32)(pil)
    _check_output(out, 32)
    assert torch.equal(_as_uint8(out), source)


def test_extreme_values_map_to_zero_and_one() -> None:
    source = torch.zeros(3, 32, 32, dtype=torch.uint8)
    source[1] = 255
    out = build_transform(None, 32)(source)
    assert float(out[0].max()) == 0.0
    assert float(out[1].min()) == 1.0


@pytest.mark.parametrize(("height", "width"), [(40, 48), (16, 16), (64, 20)])
def test_other_sizes_are_resized(height: int, width: int) -> None:
    source = _random_image(2, height, width)
    _check_output(build_transform(None, 32)(source), 32)
    pil = Image.fromarray(source.permute(1, 2, 0).numpy())
    _check_output(build_transform(None, 32)(pil), 32)


def test_resize_to_another_image_size() -> None:
    _check_output(build_transform(None, 24)(_random_image()), 24)
    _check_output(_augmenting(24, "random_crop", "horizontal_flip")(_random_image()), 24)


def test_a_constant_image_stays_constant_when_resized() -> None:
    source = torch.full((3, 40, 48), 128, dtype=torch.uint8)
    out = build_transform(None, 32)(source)
    assert torch.allclose(out, torch.full((3, 32, 32), 128 / 255), atol=1e-6)


def test_builtin_augmentations_are_registered() -> None:
    names = list_augmentations()
    assert {"random_crop", "horizontal_flip"} <= set(names)
    assert names == sorted(names)


PER_IMAGE = [a.name for a in augmentation_specs() if a.per_image is not None]


def test_every_image_stage_augmentation_has_an_implementation() -> None:
    for spec in augmentation_specs():
        assert spec.image_stage != (spec.batch_mix is not None)
        if spec.image_stage:
            assert spec.per_image is not None or spec.batched is not None, spec.name


@pytest.mark.parametrize("name", PER_IMAGE)
@pytest.mark.parametrize("size", [32, 40])
def test_every_augmentation_keeps_shape_dtype_and_range(name: str, size: int) -> None:
    transform = _augmenting(size, name)
    torch.manual_seed(0)
    for seed in range(3):
        _check_output(transform(_random_image(seed, size, size)), size)
        pil = Image.fromarray(_random_image(seed, size, size).permute(1, 2, 0).numpy())
        _check_output(transform(pil), size)


def _shift(source: torch.Tensor, out: torch.Tensor, pad: int) -> tuple[int, int] | None:
    """The (dy, dx) with out[y, x] == source[y + dy, x + dx] on the centre, if any."""
    size = source.shape[-1]
    centre = out[:, pad : size - pad, pad : size - pad]
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            window = source[:, pad + dy : size - pad + dy, pad + dx : size - pad + dx]
            if torch.equal(centre, window):
                return dy, dx
    return None


def test_random_crop_translates_by_at_most_four_pixels() -> None:
    source = _random_image(3)
    plain = _as_uint8(build_transform(None, 32)(source))
    crop = _augmenting(32, "random_crop")
    shifts = []
    for seed in range(12):
        torch.manual_seed(seed)
        out = _as_uint8(crop(source))
        shift = _shift(source, out, pad=4)
        assert shift is not None, f"seed {seed}: the centre is not a shifted copy of the input"
        shifts.append(shift)
    # The crop does move the image (and not always by the same amount)...
    assert any(shift != (0, 0) for shift in shifts)
    assert len(set(shifts)) > 1
    # ...so the augmented output differs from the plain one for some seed.
    torch.manual_seed(next(s for s, shift in enumerate(shifts) if shift != (0, 0)))
    assert not torch.equal(_as_uint8(crop(source)), plain)


def test_random_crop_is_reproducible_under_a_fixed_seed() -> None:
    crop = _augmenting(32, "random_crop")
    source = _random_image(4)
    torch.manual_seed(7)
    first = crop(source)
    torch.manual_seed(7)
    assert torch.equal(crop(source), first)


def test_horizontal_flip_gives_the_input_or_its_mirror() -> None:
    source = _random_image(5)
    flip = _augmenting(32, "horizontal_flip")
    plain, mirrored = source.float() / 255, source.flip(-1).float() / 255
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = _as_uint8(flip(source))
        if torch.equal(out, source):
            seen.add("plain")
        elif torch.equal(out, source.flip(-1)):
            seen.add("mirrored")
        else:
            pytest.fail(f"seed {seed}: output is neither the input nor its mirror")
    assert seen == {"plain", "mirrored"}
    assert not torch.equal(plain, mirrored)


def test_register_augmentation_makes_a_name_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep the registry as it was after this test.
    registry = transforms.AUGMENTATIONS
    monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    sizes: list[int] = []

    def _invert(cfg: DataConfig) -> v2.Transform:
        sizes.append(cfg.image_size)
        return v2.RandomInvert(p=1.0)

    register_augmentation(Augmentation("invert_for_test", "test", per_image=_invert))
    assert "invert_for_test" in list_augmentations()
    cfg = DataConfig(augmentations="invert_for_test")
    assert cfg.augmentations == ("invert_for_test",)
    source = _random_image(6)
    out = build_transform(cfg, 32)(source)
    assert sizes == [32]
    assert torch.equal(_as_uint8(out), 255 - source)
    with pytest.raises(ValueError, match="registered twice"):
        register_augmentation(Augmentation("invert_for_test", "again", per_image=_invert))


def test_config_accepts_comma_separated_names() -> None:
    cfg = DataConfig(augmentations=" random_crop , horizontal_flip ")
    assert cfg.augmentations == ("random_crop", "horizontal_flip")
    assert DataConfig(augmentations="").augmentations == ()


def test_unknown_augmentation_is_rejected_with_the_known_names() -> None:
    # The config takes any name (it is a schema); check_names and the pipeline refuse it.
    cfg = DataConfig(augmentations=("random_crop", "colour_jitter"))
    with pytest.raises(ConfigError) as info:
        build_transform(cfg, 32)
    message = str(info.value)
    assert message.startswith("unknown augmentation 'colour_jitter'; known: ")
    assert message.split("known: ")[1].split(", ") == list_augmentations()
