"""The synthetic dataset: determinism, format, balance, flip-invariance and difficulty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visionops.data.synthetic import (
    _GLYPH_SEED,
    CLASS_NAMES,
    NUM_CLASSES,
    _class_glyphs,
    make_synthetic,
)


def test_same_seed_gives_identical_tensors() -> None:
    images_a, labels_a = make_synthetic(50, seed=3)
    images_b, labels_b = make_synthetic(50, seed=3)
    assert torch.equal(images_a, images_b)
    assert torch.equal(labels_a, labels_b)


def test_different_seed_gives_different_tensors() -> None:
    images_a, labels_a = make_synthetic(50, seed=3)
    images_b, labels_b = make_synthetic(50, seed=4)
    assert not torch.equal(images_a, images_b)
    assert not torch.equal(labels_a, labels_b)
    # Not merely a few pixels: most of the images differ.
    differing = (images_a != images_b).flatten(1).any(dim=1).sum().item()
    assert differing == 50


def test_generation_does_not_touch_the_global_rng() -> None:
    state = torch.get_rng_state()
    make_synthetic(20, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("image_size", [16, 32, 40])
def test_dtype_and_shape(image_size: int) -> None:
    images, labels = make_synthetic(30, seed=0, image_size=image_size)
    assert images.dtype == torch.uint8
    assert images.shape == (30, 3, image_size, image_size)
    assert labels.dtype == torch.int64
    assert labels.shape == (30,)
    assert int(labels.min()) >= 0
    assert int(labels.max()) < NUM_CLASSES
    # The images use a real range of intensities, not a constant.
    assert images.float().std() > 10


def test_labels_are_balanced_across_the_ten_classes() -> None:
    _, labels = make_synthetic(500, seed=1)
    counts = torch.bincount(labels, minlength=NUM_CLASSES)
    assert counts.tolist() == [50] * NUM_CLASSES
    # ...and shuffled, not in class order.
    assert not torch.equal(labels, torch.arange(500) % NUM_CLASSES)


def test_labels_stay_balanced_when_n_is_not_a_multiple_of_ten() -> None:
    _, labels = make_synthetic(23, seed=1)
    counts = torch.bincount(labels, minlength=NUM_CLASSES)
    assert int(counts.max()) - int(counts.min()) <= 1
    assert int(counts.sum()) == 23


def test_class_names() -> None:
    assert len(CLASS_NAMES) == NUM_CLASSES == 10
    assert CLASS_NAMES[0] == "glyph_0"
    assert CLASS_NAMES[9] == "glyph_9"


def test_class_glyphs_are_left_right_symmetric_and_distinct() -> None:
    glyphs = _class_glyphs(torch.Generator().manual_seed(_GLYPH_SEED))
    assert glyphs.shape == (NUM_CLASSES, 6, 6)
    assert set(glyphs.unique().tolist()) <= {0.0, 1.0}
    # A horizontal flip maps each glyph onto itself, so it preserves the label...
    assert torch.equal(glyphs, glyphs.flip(-1))
    # ...and onto no other class's glyph.
    flat = glyphs.flatten(1)
    differences = (flat[:, None, :] != flat.flip(-1)[None, :, :]).sum(-1)
    off_diagonal = differences[~torch.eye(NUM_CLASSES, dtype=torch.bool)]
    assert int(off_diagonal.min()) >= 8
    # None is blank or full.
    cells = glyphs.sum(dim=(1, 2))
    assert bool(((cells >= 8) & (cells <= 28)).all())


def test_class_glyphs_are_fixed_by_the_glyph_seed() -> None:
    first = _class_glyphs(torch.Generator().manual_seed(_GLYPH_SEED))
    second = _class_glyphs(torch.Generator().manual_seed(_GLYPH_SEED))
    assert torch.equal(first, second)


@pytest.fixture
def one_thread():
    """Small matmuls gain nothing from intra-op threads and slow down a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_a_linear_model_on_pixels_stays_far_below_90_percent() -> None:
    torch.manual_seed(0)
    images, labels = make_synthetic(3600, seed=0)
    x = images.flatten(1).float() / 255
    x_train, y_train, x_val, y_val = x[:3000], labels[:3000], x[3000:], labels[3000:]
    model = nn.Linear(x.shape[1], NUM_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        for batch in torch.randperm(len(x_train), generator=generator).split(256):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        train_accuracy = (model(x_train).argmax(1) == y_train).float().mean().item()
        val_accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    # The linear model did fit something (so the low score is not a broken training loop)...
    assert train_accuracy > val_accuracy
    # ...but the classes are not linearly separable on raw pixels.
    assert val_accuracy < 0.9
