"""The corruptions a photo of the field suffers, as a registry: name -> (image uint8 H x W x 3, severity, rng) -> image.

Severity 0 is the identity; severities 1..5 follow Hendrycks & Dietterich 2019, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations" (ICLR; ImageNet-C, github.com/hendrycks/robustness,
`make_imagenet_c.py`), with their severity constants, where the corruption is one of theirs (Gaussian noise, defocus
blur, motion blur, brightness, contrast, JPEG, pixelate). The others (darker, small rotation, zoom, colour cast) are
this harness's definitions, documented on each entry. ImageNet-C corrupts the 224 x 224 network input, so does the
harness: a corruption is applied to the model's input (after the spec's resize), and constants in pixels (blur radii)
are scaled by min(H, W) / 224 so that a severity takes the same share of any input size.

Deterministic per (photo, corruption, severity): `photo_rng` seeds numpy's generator from the photo's pixels, the
corruption's name, the severity and a run seed, so a rerun corrupts every photo exactly as before and no two photos
share their noise. Implemented with numpy, scipy.ndimage and Pillow (the PyPI package imagecorruptions 1.1.2 no
longer runs on current scikit-image; ImageNet-C's own code needs Wand/ImageMagick and OpenCV).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage, signal

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIDE = 224  # ImageNet-C's input size: pixel constants are defined there

CorruptFn = Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    name: str
    title: str  # as a report shows it
    constants: tuple[Any, ...]  # one per severity 1..5
    definition: str  # one line for the evidence file's protocol
    source: str  # "ImageNet-C" (Hendrycks & Dietterich 2019) or "harness"
    fn: CorruptFn  # (float32 H x W x 3 in [0, 1], the severity's constant, rng) -> float32 image (clipped later)


def _scale(image: np.ndarray) -> float:
    return min(image.shape[0], image.shape[1]) / REFERENCE_SIDE


def _value(x: np.ndarray) -> np.ndarray:
    return x.max(axis=2, keepdims=True)


def _with_value(x: np.ndarray, v_new: np.ndarray) -> np.ndarray:
    """The image with its HSV value (max over channels) replaced by `v_new`, hue and saturation kept: every channel
    scales by v_new / v (exactly what HSV -> RGB gives back); a black pixel becomes grey v_new."""
    v = _value(x)
    safe = np.where(v > 0, v, 1.0)
    return np.where(v > 0, x * (v_new / safe), np.broadcast_to(v_new, x.shape))


def gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C gaussian_noise: x + N(0, c^2) per pixel and channel, c = [.08, .12, .18, .26, .38]."""
    return x + rng.normal(size=x.shape, scale=c).astype(np.float32)


def _gauss1d(sigma: float, half: int) -> np.ndarray:
    t = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(t**2) / (2 * max(sigma, 1e-6) ** 2))
    return g / g.sum()


def disk_kernel(radius: float, alias_blur: float, supersample: int = 8) -> np.ndarray:
    """ImageNet-C's `disk`: a normalised disc of `radius` px, smoothed by a small Gaussian (sigma `alias_blur`, 3 x 3
    taps up to radius 8, 5 x 5 above, as cv2.GaussianBlur in the original). Each tap is the share of its pixel the
    disc covers (sampled `supersample` x `supersample` times): the same as the original's 0/1 disc at ImageNet-C's
    radii, and still a blur when the radius, scaled to a small input, falls under a pixel."""
    r = max(float(radius), 0.0)
    half = math.ceil(r) + 2
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    t = (np.arange(-half, half + 1)[:, None] + sub[None, :]).ravel()
    xx, yy = np.meshgrid(t, t)
    inside = ((xx**2 + yy**2) <= r**2).astype(np.float64)
    n = 2 * half + 1
    d = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    d[half, half] = max(d[half, half], 1e-12)  # radius 0: the identity
    d /= d.sum()
    g = _gauss1d(alias_blur, 1 if r <= 8 else 2)
    d = ndimage.convolve1d(ndimage.convolve1d(d, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return d / d.sum()


def _filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Each channel convolved with `kernel` (odd-sized), borders mirrored as cv2.filter2D's default; by FFT."""
    kh, kw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(x, ((kh, kh), (kw, kw), (0, 0)), mode="reflect")
    return signal.fftconvolve(padded, kernel[:, :, None], mode="valid", axes=(0, 1)).astype(np.float32)


def defocus_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C defocus_blur: convolution with a disc of radius c[0] (alias blur c[1]),
    c = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)] px at 224 px."""
    return _filter(x, disk_kernel(c[0] * _scale(x), c[1]).astype(np.float32))


def motion_kernel(radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion blur (used by ImageNet-C through Wand): a one-sided line of 2 * radius + 1 taps along
    `angle` (degrees, 0 = along x), weighted exp(-i^2 / (2 sigma^2)), normalised."""
    n = 2 * max(1, round(radius)) + 1
    w = np.exp(-(np.arange(n, dtype=np.float64) ** 2) / (2 * max(sigma, 1e-6) ** 2))
    w /= w.sum()
    a = math.radians(angle)
    dx = np.rint(np.arange(n) * math.cos(a)).astype(int)
    dy = np.rint(np.arange(n) * math.sin(a)).astype(int)
    k = np.zeros((2 * n + 1, 2 * n + 1))
    # correlation at offset (dy, dx) = convolution with the kernel flipped: place the taps at -offset
    np.add.at(k, (n - dy, n - dx), w)
    return k


def motion_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C motion_blur: ImageMagick motion blur of radius c[0], sigma c[1], at an angle drawn uniformly in
    [-45, 45] degrees; c = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)] px at 224 px."""
    s = _scale(x)
    return _filter(x, motion_kernel(c[0] * s, c[1] * s, float(rng.uniform(-45, 45))).astype(np.float32))


def brighter(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C brightness: in HSV, V + c (clipped to 1), hue and saturation kept; c = [.1, .2, .3, .4, .5]."""
    return _with_value(x, np.minimum(_value(x) + c, 1.0))


def darker(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C's brightness with the sign reversed (harness): in HSV, V - c (clipped to 0), hue and saturation
    kept; c = [.1, .2, .3, .4, .5]."""
    return _with_value(x, np.maximum(_value(x) - c, 0.0))


def lower_contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C contrast: (x - mean) * c + mean, the mean per channel over the image; c = [.4, .3, .2, .1, .05]."""
    means = x.mean(axis=(0, 1), keepdims=True)
    return (x - means) * c + means


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(to_uint8(x))


def jpeg(x: np.ndarray, c: int, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C jpeg_compression: saved as JPEG at quality c = [25, 18, 15, 10, 7] (Pillow) and decoded."""
    buf = io.BytesIO()
    _pil(x).save(buf, format="JPEG", quality=int(c))
    buf.seek(0)
    with Image.open(buf) as im:
        return to_float(np.asarray(im.convert("RGB")))


def pixelate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C pixelate: box-downsampled to c of its size and box-upsampled back; c = [.6, .5, .4, .3, .25]."""
    h, w = x.shape[:2]
    small = _pil(x).resize((max(1, int(w * c)), max(1, int(h * c))), Image.Resampling.BOX)
    return to_float(np.asarray(small.resize((w, h), Image.Resampling.BOX)))


def rotation(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """A small rotation (harness): c = [5, 10, 15, 20, 25] degrees, clockwise or not at random, about the centre;
    bilinear, the corners filled by mirroring the image (no black wedges for the model to read)."""
    angle = float(c) * (1 if rng.random() < 0.5 else -1)
    return ndimage.rotate(x, angle, axes=(1, 0), reshape=False, order=1, mode="mirror")


def zoom(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Zoom / crop (harness): the central 1 / c of the image (each side) resized back to the full size (bilinear),
    as a photo taken closer; c = [1.1, 1.2, 1.35, 1.5, 1.75]."""
    h, w = x.shape[:2]
    ch, cw = max(1, round(h / c)), max(1, round(w / c))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = _pil(x[top : top + ch, left : left + cw])
    return to_float(np.asarray(crop.resize((w, h), Image.Resampling.BILINEAR)))


def colour_cast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """A colour cast (harness), as a wrong white balance: each channel multiplied by 1 + c * u, u a unit vector
    orthogonal to grey (1, 1, 1) in a hue direction drawn uniformly; c = [.08, .16, .24, .32, .40]."""
    e1 = np.array([1.0, -1.0, 0.0]) / math.sqrt(2)
    e2 = np.array([1.0, 1.0, -2.0]) / math.sqrt(6)
    phi = float(rng.uniform(0, 2 * math.pi))
    u = math.cos(phi) * e1 + math.sin(phi) * e2
    return x * (1.0 + c * u).astype(np.float32)


_IMAGENET_C = "ImageNet-C (Hendrycks & Dietterich 2019)"
_HARNESS = "harness"

CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        Corruption(
            "gaussian_noise",
            "Gaussian noise",
            (0.08, 0.12, 0.18, 0.26, 0.38),
            "x + N(0, c^2) per pixel and channel",
            _IMAGENET_C,
            gaussian_noise,
        ),
        Corruption(
            "defocus_blur",
            "defocus blur",
            ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
            "convolution with a disc of radius c[0] px (at 224 px), alias blur c[1]",
            _IMAGENET_C,
            defocus_blur,
        ),
        Corruption(
            "motion_blur",
            "motion blur",
            ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
            "one-sided motion blur, radius c[0] and sigma c[1] px (at 224 px), angle uniform in [-45, 45] degrees",
            _IMAGENET_C,
            motion_blur,
        ),
        Corruption("brighter", "brighter", (0.1, 0.2, 0.3, 0.4, 0.5), "HSV value + c", _IMAGENET_C, brighter),
        Corruption(
            "darker", "darker", (0.1, 0.2, 0.3, 0.4, 0.5), "HSV value - c (brightness reversed)", _HARNESS, darker
        ),
        Corruption(
            "lower_contrast",
            "lower contrast",
            (0.4, 0.3, 0.2, 0.1, 0.05),
            "(x - channel mean) * c + channel mean",
            _IMAGENET_C,
            lower_contrast,
        ),
        Corruption("jpeg", "JPEG quality", (25, 18, 15, 10, 7), "JPEG at quality c", _IMAGENET_C, jpeg),
        Corruption(
            "pixelate",
            "pixelate",
            (0.6, 0.5, 0.4, 0.3, 0.25),
            "box down to c of the size and back",
            _IMAGENET_C,
            pixelate,
        ),
        Corruption("rotation", "small rotation", (5, 10, 15, 20, 25), "rotation by +-c degrees", _HARNESS, rotation),
        Corruption(
            "zoom", "zoom / crop", (1.1, 1.2, 1.35, 1.5, 1.75), "central 1/c of each side, resized", _HARNESS, zoom
        ),
        Corruption(
            "colour_cast",
            "colour cast",
            (0.08, 0.16, 0.24, 0.32, 0.40),
            "channel gains 1 + c * u, u a random hue direction orthogonal to grey",
            _HARNESS,
            colour_cast,
        ),
    )
}


def to_float(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / np.float32(255)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x, dtype=np.float32) * 255), 0, 255).astype(np.uint8)


def check_name(name: str) -> Corruption:
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; known: {list(CORRUPTIONS)}")
    return CORRUPTIONS[name]


def photo_rng(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.random.Generator:
    """numpy's generator for one (photo, corruption, severity): seeded from the sha256 of the photo's pixels and
    shape, the corruption's name, the severity and the run's seed."""
    h = hashlib.sha256()
    h.update(repr((tuple(image.shape), str(image.dtype), name, int(severity), int(seed))).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return np.random.default_rng(int.from_bytes(h.digest()[:8], "little"))


def corrupt(name: str, image: np.ndarray, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """`image` (uint8 H x W x 3) corrupted by `name` at `severity` (0: the identity, a copy; 1..5: the registry's
    constants) -> uint8 H x W x 3. `rng` None: photo_rng(image, name, severity)."""
    c = check_name(name)
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"corrupt: image must be uint8 H x W x 3, got {a.dtype} of shape {list(a.shape)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= 5:
        raise ValueError(f"corrupt: severity must be an integer in 0..5, got {severity!r}")
    if severity == 0:
        return a.copy()
    rng = rng if rng is not None else photo_rng(a, name, int(severity))
    return to_uint8(c.fn(to_float(a), c.constants[int(severity) - 1], rng))


def corrupt_batch(name: str, canonical: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """A canonical batch (float32 N x 3 x H x W, RGB in [0, 1], as harness.preprocess.prepare gives) corrupted image
    by image -> the same layout. Each image's generator is photo_rng of its uint8 pixels (and `seed`)."""
    out = np.empty_like(canonical, dtype=np.float32)
    for i, x in enumerate(np.asarray(canonical, dtype=np.float32)):
        img = to_uint8(x.transpose(1, 2, 0))
        res = corrupt(name, img, severity, photo_rng(img, name, severity, seed))
        out[i] = to_float(res).transpose(2, 0, 1)
    return out
