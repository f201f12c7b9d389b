"""The device loader's batched augmentations, called directly on uint8 batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visionops.config import DataConfig
from visionops.data import batched
from visionops.data.batched import BatchContext

_DATASET_SIZE = 64


def _images(batch: int = 32, size: int = 16, low: int = 0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, 256, (batch, 3, size, size), generator=generator, dtype=torch.uint8)


def _context(
    seed: int = 0,
    epoch: int = 0,
    indices: torch.Tensor | None = None,
    image_bits: torch.Tensor | None = None,
    **cfg: object,
) -> BatchContext:
    if indices is None:
        indices = torch.arange(32)
    if image_bits is None:
        image_bits = torch.randint(
            0, 2, (_DATASET_SIZE,), generator=torch.Generator().manual_seed(123)
        ).bool()
    return BatchContext(
        DataConfig(**cfg),  # type: ignore[arg-type]
        torch.Generator().manual_seed(seed),
        epoch,
        indices,
        image_bits,
    )


# --- random_crop ---------------------------------------------------------------------------


def _crop_offsets(images: torch.Tensor, out: torch.Tensor, pad: int) -> list[tuple[int, int]]:
    """The (top, left) offset into the reflect-padded image that gives each output image."""
    height, width = images.shape[-2:]
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    offsets = []
    for i in range(len(images)):
        matches = [
            (top, left)
            for top in range(2 * pad + 1)
            for left in range(2 * pad + 1)
            if torch.equal(padded[i, :, top : top + height, left : left + width], out[i].float())
        ]
        assert matches, f"image {i} is not a crop of its reflect-padded input"
        offsets.append(matches[0])
    return offsets


@pytest.mark.parametrize("pad", [1, 2, 4])
def test_random_crop_is_a_crop_of_the_reflect_padded_image(pad: int) -> None:
    images = _images()
    out = batched.random_crop(images, _context(crop_padding=pad))
    assert out.shape == images.shape
    assert out.dtype == torch.uint8
    offsets = _crop_offsets(images, out, pad)
    assert all(0 <= top <= 2 * pad and 0 <= left <= 2 * pad for top, left in offsets)
    # Each image gets its own shift: a batch of 32 holds several different ones, in both axes.
    assert len(set(offsets)) > 1
    assert len({top for top, _ in offsets}) > 1
    assert len({left for _, left in offsets}) > 1


def test_random_crop_covers_the_whole_shift_range() -> None:
    pad = 2
    images = _images(batch=256, size=8)
    out = batched.random_crop(images, _context(crop_padding=pad))
    offsets = _crop_offsets(images, out, pad)
    # 25 possible offsets, 256 draws: each row and column offset occurs.
    assert {top for top, _ in offsets} == set(range(2 * pad + 1))
    assert {left for _, left in offsets} == set(range(2 * pad + 1))


def test_random_crop_with_zero_padding_returns_the_input() -> None:
    images = _images()
    out = batched.random_crop(images, _context(crop_padding=0))
    assert torch.equal(out, images)


def test_random_crop_padding_is_capped_below_the_image_size() -> None:
    # A shift larger than the image would index outside it; the op caps it at size - 1.
    images = _images(batch=8, size=4)
    out = batched.random_crop(images, _context(crop_padding=10))
    assert out.shape == images.shape
    offsets = _crop_offsets(images, out, 3)
    assert all(0 <= top <= 6 and 0 <= left <= 6 for top, left in offsets)


def test_random_crop_output_is_channels_last() -> None:
    out = batched.random_crop(_images(), _context(crop_padding=2))
    assert out.is_contiguous(memory_format=torch.channels_last)


# --- flips -----------------------------------------------------------------------------------


def test_horizontal_flip_mirrors_some_images_and_keeps_the_others() -> None:
    images = _images()
    out = batched.horizontal_flip(images, _context())
    assert out.shape == images.shape and out.dtype == torch.uint8
    flipped = []
    for i in range(len(images)):
        same, mirrored = torch.equal(out[i], images[i]), torch.equal(out[i], images[i].flip(-1))
        assert same != mirrored, f"image {i} is neither the input nor its mirror"
        flipped.append(mirrored)
    assert any(flipped) and not all(flipped)


def _flipped(images: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    flags = []
    for i in range(len(images)):
        if torch.equal(out[i], images[i]):
            flags.append(False)
        else:
            assert torch.equal(out[i], images[i].flip(-1)), f"image {i} is not its mirror"
            flags.append(True)
    return torch.tensor(flags)


def test_alternating_flip_flips_each_image_in_exactly_one_of_two_epochs() -> None:
    images = _images()
    indices = torch.randperm(_DATASET_SIZE, generator=torch.Generator().manual_seed(5))[:32]
    bits = torch.randint(0, 2, (_DATASET_SIZE,), generator=torch.Generator().manual_seed(9)).bool()

    def flipped(epoch: int) -> torch.Tensor:
        context = _context(epoch=epoch, indices=indices, image_bits=bits)
        return _flipped(images, batched.alternating_flip(images, context))

    epoch0, epoch1, epoch2, epoch3 = (flipped(epoch) for epoch in range(4))
    assert torch.equal(epoch0, bits[indices])  # even epochs: the image's bit
    assert torch.equal(epoch1, ~bits[indices])  # odd epochs: its complement
    assert torch.all(epoch0 ^ epoch1)
    assert torch.equal(epoch0, epoch2) and torch.equal(epoch1, epoch3)
    assert 0 < int(epoch0.sum()) < len(indices)


def test_alternating_flip_ignores_the_generator() -> None:
    images = _images()
    a = batched.alternating_flip(images, _context(seed=1, epoch=3))
    b = batched.alternating_flip(images, _context(seed=2, epoch=3))
    assert torch.equal(a, b)


# --- cutout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [1, 5, 8])
def test_cutout_zeroes_one_square_per_image(side: int) -> None:
    images = _images(low=1)  # no zeros in the input: every zero is cutout's
    out = batched.cutout(images, _context(cutout_size=side))
    assert out.shape == images.shape and out.dtype == torch.uint8
    zero = out == 0
    tops = set()
    for i in range(len(images)):
        mask = zero[i, 0]
        assert all(torch.equal(zero[i, c], mask) for c in range(3)), "same square on each channel"
        assert int(mask.sum()) == side * side
        rows = mask.any(dim=1).nonzero().flatten()
        cols = mask.any(dim=0).nonzero().flatten()
        top, left = int(rows[0]), int(cols[0])
        assert len(rows) == len(cols) == side
        assert int(rows[-1]) - top == side - 1 and int(cols[-1]) - left == side - 1
        assert mask[top : top + side, left : left + side].all()
        assert 0 <= top <= 16 - side and 0 <= left <= 16 - side
        tops.add((top, left))
        assert torch.equal(out[i][~zero[i]], images[i][~zero[i]])  # the rest is untouched
    assert len(tops) > 1  # placed independently per image


def test_cutout_larger_than_the_image_erases_all_of_it() -> None:
    out = batched.cutout(_images(batch=4, size=8, low=1), _context(cutout_size=20))
    assert torch.all(out == 0)


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op", [batched.random_crop, batched.horizontal_flip, batched.cutout], ids=lambda op: op.__name__
)
def test_same_generator_seed_gives_the_same_output(op: batched.BatchedOp) -> None:
    images = _images(low=1)
    first = op(images, _context(seed=7, crop_padding=3))
    second = op(images, _context(seed=7, crop_padding=3))
    other = op(images, _context(seed=8, crop_padding=3))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
