"""The per-image evidence of one model: its answers under every corruption and severity, under object masking and
along the faithfulness curves, every forward pass through one forward function (one onnxruntime session), batched.

The photos are prepared once per test set to the model's input (the canonical array, kept as uint8: `prepare` gives
exact multiples of 1/255) and every perturbation is applied there (harness.robustness.corruptions, .masking,
.faithfulness). A flipped answer under a corruption gets a thumbnail (the model's input clean | corrupted) under
<folder>/robustness/<corruption>-s<severity>/<test set>/, at most MAX_THUMBS per (test set, corruption, severity).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.data import Dataset
from harness.preprocess import prepare
from harness.robustness import faithfulness, masking
from harness.robustness.batching import Forward, answer, predict_groups
from harness.robustness.corruptions import corrupt, corrupt_batch, photo_rng, to_float
from harness.robustness.files import THUMBS
from harness.robustness.maps import Key
from harness.robustness.settings import RobustnessSettings
from harness.saliency.scoring import overlay_path
from harness.spec import ModelSpec

MAX_THUMBS = 12
THUMB_PX = 112


def input_images(spec: ModelSpec, ds: Dataset, chunk: int = 32) -> np.ndarray:
    """The test set at the model's input: uint8 N x H x W x 3 (the canonical array times 255, exactly)."""
    h, w = spec.size
    out = np.zeros((len(ds), h, w, 3), np.uint8)
    for i in range(0, len(ds), chunk):
        x = prepare(spec, [s.image for s in ds.samples[i : i + chunk]])
        out[i : i + len(x)] = np.rint(x * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return out


def canonical(images: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x 3 -> float32 N x 3 x H x W in [0, 1]."""
    return to_float(images).transpose(0, 3, 1, 2)


def _chunks(images: np.ndarray, batch: int, fn: Callable[[np.ndarray], np.ndarray]) -> Iterator[np.ndarray]:
    for i in range(0, len(images), batch):
        yield fn(canonical(images[i : i + batch]))


def clean_probabilities(forward: Forward, images: np.ndarray, batch: int) -> np.ndarray:
    """The model's probabilities for the test set's photos as they are (N x C)."""
    groups = predict_groups(forward, _chunks(images, batch, lambda x: x), batch)
    return np.concatenate(groups) if groups else np.zeros((0, 0), np.float32)


def _soft(ans: Mapping[str, Any], acceptable: Sequence[str]) -> bool:
    return ans["predicted"] in acceptable


def corruption_records(
    forward: Forward,
    ds: Dataset,
    images: np.ndarray,
    clean: np.ndarray,
    classes: Sequence[str],
    settings: RobustnessSettings,
    thumbs: Path | None,
    split: str,
) -> tuple[list[dict[str, Any]], int]:
    """(one record per photo: its clean answer and its answer under every corruption and severity; forward passes).
    Thumbnails of the flipped answers go under `thumbs` (None: none written)."""
    classes = list(classes)
    b = settings.batch
    records: list[dict[str, Any]] = [
        {
            "image": s.name,
            "label": s.label,
            "acceptable": sorted(s.acceptable),
            "clean": answer(p, classes, s.label),
            "corrupted": {},
        }
        for s, p in zip(ds.samples, clean)
    ]
    passes = 0
    for name in settings.corruptions:
        for sev in settings.severities:
            groups = _chunks(images, b, _corrupter(name, sev, settings.seed))
            probs = np.concatenate(predict_groups(forward, groups, b) or [np.zeros((0, 0))])
            passes += len(images)
            shown = 0
            for i, (rec, p) in enumerate(zip(records, probs)):
                ans = answer(p, classes, rec["label"])
                if (
                    thumbs is not None
                    and shown < MAX_THUMBS
                    and _soft(ans, rec["acceptable"]) != _soft(rec["clean"], rec["acceptable"])
                ):
                    ans["thumb"] = write_thumb(thumbs, images[i], name, sev, settings.seed, split, rec["image"])
                    shown += 1
                rec["corrupted"].setdefault(name, {})[str(sev)] = ans
    return records, passes


def _corrupter(name: str, severity: int, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: corrupt_batch(name, x, severity, seed)


def write_thumb(thumbs: Path, image: np.ndarray, name: str, severity: int, seed: int, split: str, photo: str) -> str:
    """The model's input clean | corrupted, side by side (THUMB_PX high), as a PNG under `thumbs`; returns its path
    relative to the model folder (robustness/<corruption>-s<severity>/<test set>/<photo>.png)."""
    rel = Path(THUMBS) / f"{name}-s{severity}" / overlay_path(split, photo).relative_to("cam")
    bad = corrupt(name, image, severity, photo_rng(image, name, severity, seed))
    h, w = image.shape[:2]
    size = (max(1, round(w * THUMB_PX / h)), THUMB_PX)
    pair = Image.new("RGB", (2 * size[0] + 4, size[1]), (255, 255, 255))
    pair.paste(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR), (0, 0))
    pair.paste(Image.fromarray(bad).resize(size, Image.Resampling.BILINEAR), (size[0] + 4, 0))
    path = thumbs / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pair.save(path, format="PNG")
    return rel.as_posix()


def masking_records(
    forward: Forward,
    spec: ModelSpec,
    ds: Dataset,
    images: np.ndarray,
    clean: np.ndarray,
    classes: Sequence[str],
    settings: RobustnessSettings,
) -> tuple[list[dict[str, Any]], int]:
    """(one record per photo: its clean answer and, for a photo with labelled regions, its answers with the regions
    hidden, with only them kept and with the same shape hidden elsewhere; forward passes)."""
    classes = list(classes)
    b = settings.batch
    plans: list[tuple[int, float, str]] = []
    overlaps: dict[int, list[float]] = {}

    def groups() -> Iterator[np.ndarray]:
        for i, sample in enumerate(ds.samples):
            reason = masking.skip_reason(sample, ds.has_regions)
            mask = None if reason else masking.input_mask(spec, masking.photo_mask(sample))
            if mask is not None and not mask.any():
                reason = "region_outside_input"
            plans.append((i, float(mask.mean()) if mask is not None else 0.0, reason))
            if reason or mask is None:
                continue
            x = canonical(images[i : i + 1])[0]
            batch, overlaps[i] = masking.masked_versions(
                x, mask, settings.fill, settings.draws, masking.image_rng(x, settings.seed)
            )
            yield batch

    probs = iter(predict_groups(forward, groups(), b))
    records = []
    for i, area, reason in plans:
        p = None if reason else next(probs)
        records.append(masking.image_record(ds.samples[i], classes, clean[i], p, area, overlaps.get(i, []), reason))
    return records, sum(len(o) + 2 for o in overlaps.values())


def faithfulness_records(
    forward: Forward,
    ds: Dataset,
    images: np.ndarray,
    clean: np.ndarray,
    classes: Sequence[str],
    maps: Mapping[str, Mapping[Key, np.ndarray]],
    settings: RobustnessSettings,
    split: str,
) -> tuple[list[dict[str, Any]], int]:
    """(one record per photo: the deletion and insertion curves of the predicted class for each method's stored map
    of it, and for a random map; forward passes)."""
    classes = list(classes)
    b = settings.batch
    plans: list[tuple[int, int, list[str]]] = []

    def groups() -> Iterator[np.ndarray]:
        for i, sample in enumerate(ds.samples):
            target = int(np.argmax(clean[i]))
            key = (split, sample.name, classes[target])
            have = {m: store[key] for m, store in maps.items() if key in store}
            if not have:
                plans.append((i, target, []))
                continue
            x = canonical(images[i : i + 1])[0]
            rng = photo_rng(images[i], "faithfulness", 0, settings.seed)
            batch, names = faithfulness.image_batch(x, have, settings.steps, rng)
            plans.append((i, target, names))
            yield batch

    results = iter(predict_groups(forward, groups(), b))
    records = []
    passes = 0
    for i, target, names in plans:
        s = ds.samples[i]
        rec: dict[str, Any] = {"image": s.name, "label": s.label, "class": classes[target]}
        if not names:
            records.append(rec | {"skipped": "no stored map of the predicted class"})
            continue
        probs = next(results)
        passes += len(probs)
        records.append(rec | {"curves": faithfulness.curves(probs, names, settings.steps, target)})
    return records, passes
