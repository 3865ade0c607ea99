"""Images at working size: decode a stored photo once (EXIF orientation, bit depth, alpha, bombs) and resize batches."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from harness.data.types import DataError

DEFAULT_SHORT_SIDE = 512


def working_short_side(image_size: int) -> int:
    """The shorter side images are kept at: twice the largest size in use, at least 512 (so the bundled 640 x 480
    photos stay as stored and published figures do not move)."""
    return max(2 * int(image_size), DEFAULT_SHORT_SIDE)


def _to_8bit(im: Image.Image) -> Image.Image:
    """High-bit-depth modes scaled to 8 bits (Pillow's convert('RGB') would clip them to white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float32)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.round(a * 255.0 / peak), 0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float32))
        a = a * 255.0 if a.max(initial=0) <= 1.0 else a
        return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    return im


# what Pillow raises on corrupt, truncated or unsupported files (its plugins are not uniform)
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    ZeroDivisionError,
)


def decode_image(
    path: Path, max_short_side: int | None = DEFAULT_SHORT_SIDE
) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """Decode to uint8 RGB 3 x H x W at working size: (tensor, scale, (width, height) of the photo as displayed).

    EXIF orientation is applied first (phone photos are stored rotated; COCO coordinates refer to the photo as
    displayed), 16-bit images are scaled to 8 bits (I;16*: value / 257; I: the same when any value exceeds 255;
    F: [0, 1] when its maximum is at most 1, else 0..255), CMYK / palette / grey become RGB, alpha is composited on
    white, and the shorter side is reduced to `max_short_side` (never enlarged; None: full size) with Lanczos
    resampling. JPEGs are decoded at reduced scale directly (draft mode: DCT scaling by 1/2, 1/4 or 1/8), so a
    12-megapixel photo never sits in memory at full size. `scale` is working pixels per displayed pixel along the
    shorter side (1.0 when not reduced). Corrupt or truncated files and decompression bombs (Pillow's
    Image.MAX_IMAGE_PIXELS; its warning counts as an error too) raise DataError naming the file.
    """
    if max_short_side is not None and max_short_side < 1:
        raise ValueError(f"max_short_side must be a positive number of pixels or None, got {max_short_side!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                im: Image.Image = opened  # reassigned below to each converted copy
                orientation = im.getexif().get(0x0112, 1)
                w0, h0 = im.size
                if orientation in (5, 6, 7, 8):
                    w0, h0 = h0, w0
                scale = 1.0
                if max_short_side is not None and min(w0, h0) > max_short_side:
                    scale = max_short_side / min(w0, h0)
                    if im.format == "JPEG":
                        # draft size is in stored orientation; it picks a power-of-two scale >= the request
                        want = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
                        im.draft("RGB", want)
                im.load()
                if orientation != 1:
                    im = ImageOps.exif_transpose(im)
                im = _to_8bit(im)
                if im.mode not in ("RGB",):
                    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                        im = im.convert("RGBA")
                        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                        im = Image.alpha_composite(bg, im)
                    im = im.convert("RGB")
                if scale < 1.0:
                    target = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
                    if im.size != target:
                        im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
                arr = np.asarray(im, dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path}: refused as a possible decompression bomb ({exc}); Pillow's limit is "
            f"Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels. Downscale the image, or remove "
            f"it"
        ) from None
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: cannot decode image ({exc}); replace or remove the file") from exc
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), scale, (w0, h0)


def resize_batch(images: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Stretch every image to size x size (as the reference's Keras loader did): uint8 N x 3 x size x size."""
    return torch.stack([TF.resize(im, [size, size], antialias=True) for im in images])
