"""The black-box core every perturbation method (occlusion, RISE) builds on: the forward contract, the result type,
the batched sweep over perturbed copies of an image, and the readers of a method's parameters.

A forward function (``Forward``) maps a float32 batch ``(N, 3, H, W)``, RGB in [0, 1] (the canonical model input,
already resized to the model's H x W), to probabilities ``(N, C)``: finite, in [0, 1], rows summing to 1 (checked
within 1e-3: a forward returning logits is an error), columns in the dataset's class order. The unperturbed image is
evaluated in the first batch together with the first perturbed images, so that it goes through the same batched
computation; ``passes`` counts it. A map is ``(H, W)`` float64, >= 0, divided by its maximum; all zeros when nothing
is positive, which reads "the model's output for this class does not depend on the input here".

Why not Captum: Captum's ``Occlusion`` / ``FeatureAblation`` take one target per example, so several labelled classes
per image would repeat the sweep per class; the occlusion sum over windows is a few lines of numpy (one matrix
product per class, see ``occlusion.py``), checked against Captum in the tests on exactly tiling windows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.validate import read_int, read_num

Forward = Callable[[np.ndarray], np.ndarray]

# Probability rows must sum to 1 within this (float32 softmax over 1000 classes is good to ~1e-5).
ROW_SUM_TOL = 1e-3
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class SaliencyResult:
    """Maps of one image for the requested classes, from one set of forward passes."""

    probabilities: np.ndarray  # (C,) of the unperturbed image
    maps: dict[int, np.ndarray]  # class index -> (H, W) float64 map, >= 0, divided by its max (or all zeros)
    passes: int  # images actually evaluated, including the unperturbed one


@dataclass(frozen=True)
class Method:
    """A registered saliency method. ``validate(params, where, size)`` checks the merged parameters (size = (H, W)
    of the image when known) and returns them normalised; it raises ConfigError naming where, key and value."""

    name: str
    defaults: Mapping[str, Any]
    compute: Callable[..., SaliencyResult]  # compute(forward, image, targets, **params)
    passes: Callable[[int, int, Mapping[str, Any]], int]  # forward passes per image for H, W, params
    description: Callable[[Mapping[str, Any]], str]  # one line for the JSON protocol, naming the paper
    validate: Callable[[Mapping[str, Any], str, tuple[int, int] | None], dict[str, Any]] | None = None


# --- shared helpers (used by occlusion.py and rise.py) ----------------------------------------------------------------


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` as a float32 ``(3, H, W)`` array in [0, 1]; ValueError naming what is wrong otherwise."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[0] != 3 or a.shape[1] < 1 or a.shape[2] < 1:
        raise ValueError(f"image must be a (3, H, W) array (RGB, channels first), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"image must be float in [0, 1], got dtype {a.dtype} (divide uint8 images by 255)")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"image must be finite, found {int((~np.isfinite(a)).sum())} NaN/inf values")
    if a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(f"image must be in [0, 1], got values in [{a.min():.4g}, {a.max():.4g}]")
    return a


def check_sizes(**sizes: Any) -> None:
    """ValueError naming the first of ``sizes`` (name=value, in the order given) that is not an integer >= 1."""
    for key, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {key}={v!r}")


def check_targets(targets: Sequence[int]) -> list[int]:
    """The target classes as a list of ints >= 0 (duplicates collapse); ValueError when empty or not integers."""
    out: list[int] = []
    for t in targets:
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"targets must be class indices (integers >= 0), got {t!r} in {list(targets)!r}")
        if int(t) not in out:
            out.append(int(t))
    if not out:
        raise ValueError("targets is empty: name at least one class index to explain")
    return out


def evaluate(forward: Forward, batch: np.ndarray, classes: int | None = None) -> np.ndarray:
    """``forward(batch)`` checked against the contract, as float64 ``(N, C)``; ValueError otherwise."""
    n = len(batch)
    out = np.asarray(forward(batch))
    if out.ndim != 2 or out.shape[0] != n:
        raise ValueError(
            f"the forward function returned shape {out.shape} for a batch of {n} images; it must return "
            f"probabilities of shape (N, C)"
        )
    if classes is not None and out.shape[1] != classes:
        raise ValueError(f"the forward function returned {out.shape[1]} classes, earlier batches had {classes}")
    if not (np.issubdtype(out.dtype, np.floating) or np.issubdtype(out.dtype, np.integer)):
        raise ValueError(f"the forward function returned dtype {out.dtype}; it must return float probabilities")
    out = out.astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"the forward function returned {int((~np.isfinite(out)).sum())} NaN/inf values")
    sums = out.sum(1)
    if out.min() < -ROW_SUM_TOL or out.max() > 1 + ROW_SUM_TOL or np.abs(sums - 1).max() > ROW_SUM_TOL:
        raise ValueError(
            f"the forward function must return probabilities (in [0, 1], rows summing to 1), got values "
            f"in [{out.min():.4g}, {out.max():.4g}] and row sums in [{sums.min():.4g}, {sums.max():.4g}]; "
            f"apply softmax in the forward adapter when the model outputs logits"
        )
    return out


def sweep(
    forward: Forward,
    image: np.ndarray,
    count: int,
    perturb: Callable[[np.ndarray, int], None],
    batch: int,
    targets: Sequence[int],
) -> np.ndarray:
    """Probabilities ``(count + 1, C)``: row 0 of the unperturbed image, row 1 + i of the image after ``perturb(x, i)``
    (which edits the copy ``x`` in place). Batches hold ``batch`` images, the unperturbed one first in the first
    batch. ``targets`` are checked against C after the first batch (ValueError when one is out of range)."""
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    rows: list[np.ndarray] = []
    classes: int | None = None
    for start in range(0, count + 1, batch):
        stop = min(start + batch, count + 1)
        xb = np.repeat(image[None], stop - start, axis=0)
        for j, k in enumerate(range(start, stop)):
            if k:
                perturb(xb[j], k - 1)
        out = evaluate(forward, xb, classes)
        if classes is None:
            classes = out.shape[1]
            bad = [t for t in targets if t >= classes]
            if bad:
                raise ValueError(f"targets {bad} out of range: the model has {classes} classes (0..{classes - 1})")
        rows.append(out)
    return np.concatenate(rows, 0)


def normalise(a: np.ndarray) -> np.ndarray:
    """ReLU, then divide by the maximum; all zeros when nothing is positive."""
    a = np.maximum(np.asarray(a, dtype=np.float64), 0.0)
    peak = float(a.max()) if a.size else 0.0
    return a / peak if peak > 0 else np.zeros_like(a)


# --- parameter validation ---------------------------------------------------------------------------------------------


def _native(v: Any) -> Any:
    """A numpy integer or float as the Python number it holds (numpy bools stay, to be refused as such)."""
    return v.item() if isinstance(v, (np.integer, np.floating)) else v


def int_param(params: Mapping[str, Any], key: str, where: str, lo: int, hi: int | None = None, note: str = "") -> int:
    """``params[key]`` as an integer in [lo, hi] (>= lo without hi); ConfigError naming where, key and value."""
    return read_int(_native(params[key]), key, where, min=lo, max=hi, note=note)


def float_param(
    params: Mapping[str, Any], key: str, where: str, lo: float, hi: float, *, open_ends: bool = False, note: str = ""
) -> float:
    """``params[key]`` as a finite number in [lo, hi] ((lo, hi) with ``open_ends``); ConfigError otherwise."""
    return read_num(_native(params[key]), key, where, min=lo, max=hi, min_open=open_ends, max_open=open_ends, note=note)
