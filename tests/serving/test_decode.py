"""Untrusted image bytes: the formats served, and a 4xx status for everything else."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from visionops.data.transforms import build_decode
from visionops.serving.decode import (
    DEFAULT_MAX_PIXELS,
    ImageTooLarge,
    InvalidImage,
    UnsupportedImage,
    decode_image,
)


def _pixels(width: int = 32, height: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims ``width`` x ``height`` pixels (a few hundred bytes)."""
    data = bytearray(_encode(Image.fromarray(_pixels(1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR's CRC
    return bytes(data)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_a_lossless_image_decodes_to_exactly_what_training_reads(fmt: str) -> None:
    image = Image.fromarray(_pixels())
    options = {"lossless": True} if fmt == "WEBP" else {}
    decoded = decode_image(_encode(image, fmt, **options), image_size=32)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 32, 32)
    assert torch.equal(decoded, build_decode(32)(image))


def test_a_jpeg_is_resized_as_training_resizes() -> None:
    image = Image.fromarray(_pixels(64, 48))
    data = _encode(image, "JPEG", quality=90)
    decoded = decode_image(data, image_size=32)
    assert decoded.shape == (3, 32, 32)
    assert torch.equal(decoded, build_decode(32)(Image.open(io.BytesIO(data)).convert("RGB")))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_colour_modes_become_rgb(mode: str) -> None:
    image = Image.fromarray(_pixels()).convert(mode)
    assert decode_image(_encode(image, "PNG"), image_size=32).shape == (3, 32, 32)


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is text",
        b"",
        _encode(Image.fromarray(_pixels()), "GIF"),
        _encode(Image.fromarray(_pixels()), "BMP"),
    ],
    ids=["text", "empty", "gif", "bmp"],
)
def test_anything_but_png_jpeg_webp_is_415(data: bytes) -> None:
    with pytest.raises(UnsupportedImage) as caught:
        decode_image(data, image_size=32)
    assert caught.value.status == 415
    assert "image/png, image/jpeg, image/webp" in str(caught.value)


def test_a_truncated_jpeg_is_400() -> None:
    data = _encode(Image.fromarray(_pixels(64, 64)), "JPEG", quality=90)
    with pytest.raises(InvalidImage) as caught:
        decode_image(data[: len(data) // 2], image_size=32)
    assert caught.value.status == 400 and "truncated or corrupt JPEG" in str(caught.value)


@pytest.mark.parametrize("side", [40_000, 5_000], ids=["beyond-pillow-limit", "beyond-ours"])
def test_a_decompression_bomb_is_413_without_decoding_it(side: int) -> None:
    bomb = _png_declaring(side, side)
    assert len(bomb) < 1_000 and side * side > DEFAULT_MAX_PIXELS
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLarge) as caught:
            decode_image(bomb, image_size=32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413
    assert peak < 10 * 2**20  # the canvas (up to 4.8 GB of RGB) was never allocated


def test_a_smaller_limit_is_honoured() -> None:
    data = _encode(Image.fromarray(_pixels(64, 64)), "PNG")
    with pytest.raises(ImageTooLarge, match="64x64 pixels; at most 1,024"):
        decode_image(data, image_size=32, max_pixels=1024)


def test_a_polyglot_is_read_as_the_image_its_header_declares() -> None:
    image = Image.fromarray(_pixels())
    polyglot = _encode(image, "PNG") + b"<html><script>alert(1)</script></html>PK\x03\x04"
    assert torch.equal(decode_image(polyglot, image_size=32), build_decode(32)(image))


def test_a_png_signature_with_a_corrupt_header_is_400_not_415() -> None:
    header = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)  # a zero-size canvas
    chunk = (
        struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    )
    with pytest.raises(InvalidImage):
        decode_image(b"\x89PNG\r\n\x1a\n" + chunk, 16)
