"""A deterministic synthetic image-classification dataset, generated in memory from a seed.

Each class is a fixed glyph: a left-right symmetric 6x6 binary pattern drawn at 2x scale
(so horizontal flips preserve the label, as for natural images). An image places its class
glyph at a random position, in a random colour on a random-colour noisy background, next to
a random distractor blob. Position and colour vary independently of the class, so a linear
model on pixels stays far from 90% while a small CNN learns it within a couple of epochs.
"""

from __future__ import annotations

import torch

from visionops.errors import DataError

NUM_CLASSES = 10
CLASS_NAMES = tuple(f"glyph_{i}" for i in range(NUM_CLASSES))
# Glyph shapes are part of the dataset's definition, not of the sample: the same seed for
# every dataset seed, so class k always looks the same.
_GLYPH_SEED = 20_240_601
_GLYPH_CELLS = 6
_GLYPH_SCALE = 2
_NOISE_STD = 0.15


def _class_glyphs(generator: torch.Generator) -> torch.Tensor:
    """Ten distinct symmetric binary masks, shape (10, 6, 6)."""
    glyphs: list[torch.Tensor] = []
    while len(glyphs) < NUM_CLASSES:
        half = torch.rand(_GLYPH_CELLS, _GLYPH_CELLS // 2, generator=generator) < 0.5
        glyph = torch.cat([half, half.flip(1)], dim=1)
        # Keep glyphs that differ from every other one in at least 8 cells and are not blank.
        if 8 <= glyph.sum() <= 28 and all((glyph ^ g).sum() >= 8 for g in glyphs):
            glyphs.append(glyph)
    return torch.stack(glyphs).float()


def _paste(
    canvas: torch.Tensor, masks: torch.Tensor, colors: torch.Tensor, g: torch.Generator
) -> None:
    """Paint each mask (N, h, w) in its colour (N, 3) at a random spot of canvas (N, 3, S, S)."""
    n, h, w = masks.shape
    size = canvas.shape[-1]
    rows = torch.randint(0, size - h + 1, (n,), generator=g)
    cols = torch.randint(0, size - w + 1, (n,), generator=g)
    ys = rows[:, None] + torch.arange(h)  # (N, h)
    xs = cols[:, None] + torch.arange(w)  # (N, w)
    batch = torch.arange(n)[:, None, None]
    region = canvas[batch, :, ys[:, :, None], xs[:, None, :]]  # (N, h, w, 3)
    mask = masks[..., None]
    canvas[batch, :, ys[:, :, None], xs[:, None, :]] = (
        region * (1 - mask) + colors[:, None, None] * mask
    )


def make_synthetic(
    num_images: int, seed: int, image_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, N x 3 x S x S) and labels (int64, N), identical for identical arguments."""
    glyph_side = _GLYPH_CELLS * _GLYPH_SCALE
    if image_size < glyph_side:
        raise DataError(
            f"the synthetic dataset draws {glyph_side}-pixel glyphs: image_size={image_size} "
            f"is too small (use {glyph_side} or more)"
        )
    glyphs = _class_glyphs(torch.Generator().manual_seed(_GLYPH_SEED))
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % NUM_CLASSES
    labels = labels[torch.randperm(num_images, generator=g)]

    background = torch.rand(num_images, 3, 1, 1, generator=g)
    canvas = background + _NOISE_STD * torch.randn(
        num_images, 3, image_size, image_size, generator=g
    )
    canvas = canvas.clamp(0, 1)

    # Distractors are symmetric blobs of the glyphs' own density: the net must learn the shapes.
    half = torch.rand(num_images, _GLYPH_CELLS, _GLYPH_CELLS // 2, generator=g) < 0.5
    distractors = torch.cat([half, half.flip(2)], dim=2).float()
    _paste(canvas, _upscale(distractors), torch.rand(num_images, 3, generator=g), g)

    # The glyph colour is pushed away from the background so it is always visible, but whether
    # it is lighter or darker is random: a fixed pixel template cannot separate the classes.
    offset = (torch.rand(num_images, 3, generator=g) * 0.4 + 0.2) * torch.where(
        torch.rand(num_images, 1, generator=g) < 0.5, -1.0, 1.0
    )
    glyph_color = (background.view(num_images, 3) + offset).clamp(0, 1)
    _paste(canvas, _upscale(glyphs[labels]), glyph_color, g)

    images = (canvas * 255).round().to(torch.uint8)
    return images, labels


def _upscale(masks: torch.Tensor) -> torch.Tensor:
    return masks.repeat_interleave(_GLYPH_SCALE, dim=1).repeat_interleave(_GLYPH_SCALE, dim=2)
