"""Dataset health, one line per finding with the files named: class counts and imbalance, exact duplicate files,
images far from their set's size or aspect ratio, too dark / too bright / blurry / near-constant images (CleanVision's
definitions and default thresholds, computed here with numpy and Pillow), and test-set classes never seen in training.

CleanVision (cleanlab/cleanvision, image_property.py): per-pixel brightness sqrt(0.241 R^2 + 0.691 G^2 + 0.068 B^2) /
255; dark when its 99th percentile is under 0.37; too bright when 1 - its 5th percentile is under 0.05; near-constant
("low information") when 0.1 x the entropy of the RGB histogram is under 0.3; blurry when 1 - exp(-0.01 x the standard
deviation of Pillow's FIND_EDGES of the grey image at most 64 px on its longer side), plus 1 - the dark score for a
dark image, is under 0.17. As in CleanVision, the 1-pixel frame Pillow's filter leaves unfiltered counts: a smooth but
bright image is rarely called blurry, a dark one readily."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageStat

from harness.audit.hashes import to_pil

DARK_MAX = 0.37  # dark: 99th percentile of brightness below this
LIGHT_MAX = 0.05  # too bright: 1 - 5th percentile of brightness below this
LOW_INFORMATION_MAX = 0.3  # near-constant: 0.1 x entropy (bits) below this
BLURRY_MAX = 0.17  # blurry: the edge score below this
BLUR_RESOLUTION = 64
SIZE_FACTOR = 4.0  # far from the set's size: sqrt(width x height) off the set's median by more than this factor
ASPECT_FACTOR = 1.5  # far from the set's aspect: width / height off the set's median by more than this factor


def properties(image: torch.Tensor, pil: Image.Image | None = None) -> dict[str, float]:
    """The CleanVision image properties of a uint8 3 x H x W image (and the same as a PIL image, when the caller has
    it): brightness percentiles, entropy, blurriness."""
    rgb = image.numpy().astype(np.float32)
    bright = np.sqrt(0.241 * rgb[0] * rgb[0] + 0.691 * rgb[1] * rgb[1] + 0.068 * rgb[2] * rgb[2]) / 255.0
    p5, p99 = np.percentile(bright, [5, 99])
    im = pil if pil is not None else to_pil(image)
    ratio = max(im.width, im.height) / BLUR_RESOLUTION
    small = im.resize((max(1, int(im.width // ratio)), max(1, int(im.height // ratio)))) if ratio > 1 else im
    edges = small.convert("L").filter(ImageFilter.FIND_EDGES)
    return {
        "brightness_p5": float(p5),
        "brightness_p99": float(p99),
        "entropy": float(im.entropy()),
        "blurriness": float(math.sqrt(ImageStat.Stat(edges).var[0])),
    }


def issues(p: Mapping[str, float]) -> list[str]:
    """The CleanVision issues of one image's properties: 'dark', 'too bright', 'near-constant', 'blurry'."""
    dark_score = p["brightness_p99"]
    dark = dark_score < DARK_MAX
    blur_score = min(1 - math.exp(-0.01 * p["blurriness"]) + (1 - dark_score if dark else 0.0), 1.0)
    found = []
    if dark:
        found.append("dark")
    if 1 - p["brightness_p5"] < LIGHT_MAX:
        found.append("too bright")
    if min(0.1 * p["entropy"], 1.0) < LOW_INFORMATION_MAX:
        found.append("near-constant")
    if blur_score < BLURRY_MAX:
        found.append("blurry")
    return found


def _names(files: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(files[:most])
    return shown + (f" and {len(files) - most} more" if len(files) > most else "")


def class_line(split: str, labels: Sequence[str], classes: Sequence[str], items: str) -> dict[str, Any]:
    """Class counts of a set (its primary labels) and imbalance (largest over smallest count of the classes given)."""
    counts = {c: sum(1 for y in labels if y == c) for c in classes}
    counts |= {y: labels.count(y) for y in labels if y not in counts}
    present = [n for n in counts.values() if n]
    empty = [c for c, n in counts.items() if not n]
    ratio = max(present) / min(present) if present else None
    text = f"{split}: {len(labels)} {items}; " + ", ".join(f"{c} {n}" for c, n in counts.items() if n)
    if ratio is not None and len(present) > 1:
        text += f"; imbalance {ratio:.1f} (largest class over smallest)"
    if empty:
        text += f"; no {items} of {', '.join(empty)}"
    return {"check": "classes", "set": split, "counts": counts, "imbalance": ratio, "files": [], "text": text}


def far_lines(split: str, names: Sequence[str], sizes: Sequence[Sequence[int] | None], items: str) -> list[dict]:
    """Images whose size (sqrt of the area) or aspect ratio is far from the set's median."""
    known = [(n, s) for n, s in zip(names, sizes) if s and s[0] > 0 and s[1] > 0]
    if len(known) < 3:
        return []
    side = {n: math.sqrt(s[0] * s[1]) for n, s in known}
    aspect = {n: s[0] / s[1] for n, s in known}
    out = []
    for what, values, factor, unit in (
        ("size", side, SIZE_FACTOR, "px (square root of the area)"),
        ("aspect", aspect, ASPECT_FACTOR, "(width / height)"),
    ):
        mid = statistics.median(values.values())
        far = [n for n, v in values.items() if max(v / mid, mid / v) > factor]
        if far:
            out.append(
                {
                    "check": f"far_{what}",
                    "set": split,
                    "files": far,
                    "text": f"{split}: {len(far)} {items} far from the set's {what} (median {mid:.3g} {unit}, off by "
                    f"more than x{factor:g}): {_names(far)}",
                }
            )
    return out


def quality_lines(split: str, names: Sequence[str], props: Sequence[Mapping[str, float] | None], items: str):
    """One line per CleanVision issue found in the set, naming its images."""
    by: dict[str, list[str]] = {}
    for n, p in zip(names, props):
        for issue in issues(p) if p else []:
            by.setdefault(issue, []).append(n)
    return [
        {
            "check": issue.replace(" ", "_").replace("-", "_"),
            "set": split,
            "files": files,
            "text": f"{split}: {len(files)} {issue} {items} (CleanVision's definition): {_names(files)}",
        }
        for issue, files in by.items()
    ]


def unseen_line(split: str, labels: Sequence[set[str]], train_classes: Sequence[str], names: Sequence[str]):
    """A test set's labels that no training image has, with the images that carry them (None when none)."""
    unseen = sorted(set().union(*labels) - set(train_classes)) if labels else []
    if not unseen:
        return None
    files = [n for n, ls in zip(names, labels) if ls - set(train_classes)]
    return {
        "check": "unseen_classes",
        "set": split,
        "classes": unseen,
        "files": files,
        "text": f"{split}: class(es) never seen in training: {', '.join(unseen)} ({len(files)} image(s): "
        f"{_names(files)})",
    }
