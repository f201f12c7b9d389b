"""Batched augmentations: tensor ops on a uint8 batch (B, C, H, W) on the training device.

Each op draws its randomness from ``ctx.generator`` (seeded per batch by the device loader), so
a batch is a pure function of (seed, epoch, batch index) and no per-sample Python runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from visionops.config import DataConfig


@dataclass(frozen=True)
class BatchContext:
    cfg: DataConfig
    generator: torch.Generator  # on the batch's device
    epoch: int
    indices: torch.Tensor  # dataset index of each image in the batch
    image_bits: torch.Tensor  # one fixed random bit per dataset image (bool)


BatchedOp = Callable[[torch.Tensor, BatchContext], torch.Tensor]


def random_crop(images: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
    """Shift each image by up to ``crop_padding`` pixels, filling the border by reflection:
    the same distribution as padding with reflection and taking a random crop."""
    pad = min(ctx.cfg.crop_padding, images.shape[-2] - 1, images.shape[-1] - 1)
    if pad == 0:
        return images
    size, _, height, width = images.shape
    device = images.device
    shifts = torch.randint(-pad, pad + 1, (2, size, 1), generator=ctx.generator, device=device)
    rows = _reflect(torch.arange(height, device=device) + shifts[0], height)
    cols = _reflect(torch.arange(width, device=device) + shifts[1], width)
    batch = torch.arange(size, device=device)[:, None, None]
    # One gather on the channels-last view: (B, H, W, C) -> back to (B, C, H, W) strides of
    # channels_last, the layout the model wants anyway.
    return images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map positions in [-(size-1), 2(size-1)] into the image as reflect padding does."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def horizontal_flip(images: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
    flip = torch.rand(len(images), generator=ctx.generator, device=images.device) < 0.5
    return _flip_where(images, flip)


def alternating_flip(images: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
    """airbench's alternating flip: every image is seen mirrored in exactly every other
    epoch, which removes the repeats random flipping leaves over a short run."""
    return _flip_where(images, ctx.image_bits[ctx.indices] ^ (ctx.epoch % 2 == 1))


def _flip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def cutout(images: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
    """Zero one ``cutout_size`` square per image, placed uniformly inside it."""
    size, _, height, width = images.shape
    side = min(ctx.cfg.cutout_size, height, width)
    device = images.device
    top = torch.randint(0, height - side + 1, (size, 1), generator=ctx.generator, device=device)
    left = torch.randint(0, width - side + 1, (size, 1), generator=ctx.generator, device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= top) & (rows < top + side)
    in_cols = (cols >= left) & (cols < left + side)
    square = in_rows[:, :, None] & in_cols[:, None, :]
    return images.masked_fill(square[:, None], 0)
