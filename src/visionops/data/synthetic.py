"""A deterministic synthetic image-classification dataset, generated in memory from a seed.

Each class is a texture filling the whole image: horizontal stripes, vertical stripes or a
checkerboard, with stripes (or squares) 1, 2 or 3 pixels wide, and a tenth class that is
plain. An image paints its class's texture at a random phase in two random colours that
differ by at least 0.3 in every channel, and adds Gaussian pixel noise. Horizontal flips
preserve the label (a flipped texture is the same texture at another phase), as for
natural images, so the default augmentations apply.

It learns at once: the class shows in every 3x3 to 6x6 window, which is what a conv net's
first layers see, so every registered model starts learning within its first epoch.
It is not linear: averaged over the random phase and colours, every class's expected image
is the same flat grey, so a linear model on pixels has no template to match and stays far
below 90% (11% for the least-squares fit in the tests).

    >>> images, labels = make_synthetic(12, seed=0)
    >>> images.shape, images.dtype, labels[:3].tolist()
    (torch.Size([12, 3, 32, 32]), torch.uint8, [8, 0, 5])
"""

from __future__ import annotations

import torch

from visionops.errors import DataError

# Class k's texture: (varies down the rows, varies along the columns, stripe width in pixels).
# Rows only give horizontal stripes, columns only vertical ones, both a checkerboard, neither
# the plain class.
PATTERNS = (
    *((rows, cols, width) for rows, cols in ((1, 0), (0, 1), (1, 1)) for width in (1, 2, 3)),
    (0, 0, 1),
)
_KINDS = {(1, 0): "horizontal", (0, 1): "vertical", (1, 1): "checkerboard", (0, 0): "plain"}
CLASS_NAMES = tuple(
    _KINDS[rows, cols] + (f"_{width}px" if rows or cols else "") for rows, cols, width in PATTERNS
)
NUM_CLASSES = len(CLASS_NAMES)
# Two periods of the widest stripes: below that, 2- and 3-pixel stripes look alike.
MIN_IMAGE_SIZE = 4 * max(width for _, _, width in PATTERNS)
_MIN_CONTRAST = 0.3
_MAX_CONTRAST = 0.7
_NOISE_STD = 0.1


def class_patterns(
    labels: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, size: int
) -> torch.Tensor:
    """Binary textures (N, size, size) of the classes ``labels`` at row and column phases."""
    rows, cols, width = torch.tensor(PATTERNS)[labels].unbind(1)
    pixels = torch.arange(size)
    row_bits = (pixels + dy[:, None]) // width[:, None] % 2 * rows[:, None]
    col_bits = (pixels + dx[:, None]) // width[:, None] % 2 * cols[:, None]
    return (row_bits[:, :, None] + col_bits[:, None, :]) % 2 == 1


def make_synthetic(
    num_images: int, seed: int, image_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8, N x 3 x S x S) and labels (int64, N), identical for identical arguments."""
    if image_size < MIN_IMAGE_SIZE:
        raise DataError(
            f"the synthetic dataset draws stripes with a period of up to "
            f"{MIN_IMAGE_SIZE // 2} pixels: image_size={image_size} is too small "
            f"(use {MIN_IMAGE_SIZE} or more)"
        )
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % NUM_CLASSES
    labels = labels[torch.randperm(num_images, generator=g)]

    # A uniform phase over one period makes every pixel of a texture equally likely to take
    # either colour, which is what leaves a linear model nothing to read.
    period = 2 * torch.tensor(PATTERNS)[labels, 2]
    dy = (torch.rand(num_images, generator=g) * period).long()
    dx = (torch.rand(num_images, generator=g) * period).long()
    pattern = class_patterns(labels, dy, dx, image_size)[:, None]

    # The second colour moves away from the first towards the far end of each channel, so
    # no image is left without contrast.
    first = torch.rand(num_images, 3, 1, 1, generator=g)
    shift = _MIN_CONTRAST + (_MAX_CONTRAST - _MIN_CONTRAST) * torch.rand(
        num_images, 3, 1, 1, generator=g
    )
    second = (first + torch.where(first < 0.5, shift, -shift)).clamp(0, 1)

    canvas = torch.where(pattern, second, first)
    canvas += _NOISE_STD * torch.randn(canvas.shape, generator=g)
    images = canvas.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return images, labels
