"""Untrusted image bytes -> the uint8 CHW tensor every training and evaluation pipeline starts
from (``data.transforms.build_decode``), or an error that says which HTTP status it deserves.

Only PNG, JPEG and WebP are opened, whatever the file claims to be elsewhere (a polyglot is
read as the image its header declares). The pixel count is checked from the header before any
pixel is decoded, so a few-kilobyte file that declares a huge canvas costs nothing.
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError

from visionops.data.transforms import build_decode
from visionops.errors import VisionOpsError

#: Pillow format name -> media type, for the formats the server accepts.
SUPPORTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
#: The first bytes of each accepted format (WebP: a RIFF container of type WEBP).
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def _has_supported_signature(data: bytes) -> bool:
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


#: The largest image decoded (width x height): a 4K photo fits, a decompression bomb does not.
DEFAULT_MAX_PIXELS = 4096 * 4096


class ImageRejected(VisionOpsError):
    """An image the server refuses; ``status`` is the HTTP status that says why."""

    status = 400


class UnsupportedImage(ImageRejected):
    status = 415


class InvalidImage(ImageRejected):
    status = 400


class ImageTooLarge(ImageRejected):
    status = 413


def decode_image(
    data: bytes, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """``data`` as a uint8 RGB tensor (3, image_size, image_size), resized as training did.

    Raises:
        UnsupportedImage: not a PNG, JPEG or WebP image.
        ImageTooLarge: the header declares more than ``max_pixels`` pixels.
        InvalidImage: truncated or corrupt pixel data.
    """
    accepted = ", ".join(SUPPORTED_FORMATS.values())
    with warnings.catch_warnings():
        # Pillow warns, rather than raises, between its own limit and twice that.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=tuple(SUPPORTED_FORMATS))
        except UnidentifiedImageError as exc:
            if _has_supported_signature(data):  # the right kind of file, broken inside
                raise InvalidImage(f"corrupt image header: {exc}") from exc
            raise UnsupportedImage(
                f"not an image this server reads (accepted: {accepted})"
            ) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"the image declares too many pixels: {exc}") from exc
        except (OSError, SyntaxError, ValueError) as exc:  # a header Pillow cannot parse
            raise InvalidImage(f"corrupt image header: {exc}") from exc
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"the image is {width}x{height} pixels; at most {max_pixels:,} are accepted"
            )
        try:
            image.load()  # Pillow raises on truncated data unless told to pad it
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImage(f"truncated or corrupt {image.format} image: {exc}") from exc
    return build_decode(image_size)(image.convert("RGB"))
