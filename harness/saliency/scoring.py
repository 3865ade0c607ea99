"""The scoring every saliency method's step shares: one map against the labelled regions of its class (energy share,
pointing game, box IoU, each beside a uniform map's chance level), an image's record, a test set's summary, overlays.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.data import DataError, Dataset, Region, Sample
from harness.saliency import localization
from harness.saliency.gradcam import save_overlay

# Protocol parameters, recorded in every evidence file.
POINTING_TOLERANCE_PX = 15.0  # Zhang et al. 2016
CAM_BOX_THRESHOLD = 0.15  # Selvaraju et al. 2017: the CAM box keeps pixels >= 15% of the map's maximum
IOU_THRESHOLD = 0.5  # ILSVRC localization criterion
BACKGROUND = "background"
OVERLAY_DPI = 72


def rate(values: Sequence[Any]) -> float | None:
    return float(np.mean([float(v) for v in values])) if values else None


def region_scores(
    cam: np.ndarray, regions: Sequence[Region], tolerance_px: float = POINTING_TOLERANCE_PX
) -> dict[str, Any]:
    """Localization of one map against the regions of one class (their union; polygons, else boxes)."""
    h, w = cam.shape
    mask = np.zeros((h, w), dtype=bool)
    shapes = []
    for r in regions:
        m = localization.polygon_mask(r.polygon, h, w) if len(r.polygon) >= 3 else np.zeros((h, w), bool)
        if not m.any():  # no polygon (or one that rasterises to nothing): the box stands in
            m = localization.box_mask(r.bbox, h, w)
            shapes.append("box")
        else:
            shapes.append("polygon")
        mask |= m
    correct, iou = localization.gradcam_localization(cam, [r.bbox for r in regions], CAM_BOX_THRESHOLD, IOU_THRESHOLD)
    # the same figures of a uniform map: its expected energy share is the region's area fraction, its pointing hit
    # rate the fraction of pixels within the tolerance of the region
    chance_energy = localization.energy_chance(mask)
    chance_pointing = localization.pointing_chance(mask, tolerance_px)
    box = localization.cam_bbox(cam, CAM_BOX_THRESHOLD)
    peak_r, peak_c = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return {
        "regions": len(regions),
        "shape": "polygon" if set(shapes) == {"polygon"} else ("box" if set(shapes) == {"box"} else "mixed"),
        # an all-zero map points nowhere (np.argmax would say pixel (0, 0))
        "pointing_hit": bool(cam.max() > 0) and localization.pointing_game(cam, mask, tolerance_px),
        "energy_share": localization.energy_share(cam, mask),
        "energy_chance": chance_energy,
        "pointing_chance": chance_pointing,
        "iou": float(iou),
        "localization_correct": bool(correct),
        "cam_box": list(box) if box is not None else None,
        "peak_xy": [int(peak_c), int(peak_r)],
        "map_empty": not bool(cam.max() > 0),
    }


def overlay_path(split: str, name: str) -> Path:
    """cam/<split>/<image>.png; an ImageFolder sample keeps its class folder so names cannot collide.

    Sample names are relative to the dataset root (the loader refuses any that climbs out); a name that would
    still place the overlay outside cam/<split>/ is refused here too: nothing is ever written outside the run.
    """
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DataError(
            f"image name {name!r} of test set {split!r} is not a path inside the dataset root; "
            f"refusing to write its overlay"
        )
    if rel.parts[0] == split and len(rel.parts) > 1:
        rel = Path(*rel.parts[1:])
    return Path("cam") / split / rel.with_suffix(".png")


def image_record(
    sample: Sample, classes: Sequence[str], probs: np.ndarray, maps: dict[str, np.ndarray], has_regions: bool
) -> dict[str, Any]:
    """The record of one test image (prediction, localization of every labelled class's map against its regions,
    the predicted class's map against the primary label's) whatever method made the maps (Grad-CAM, occlusion...).
    `maps` holds a map over the image for the predicted class and every labelled class present."""
    by_class: dict[str, list[Region]] = {}
    for r in sample.regions:
        by_class.setdefault(r.label, []).append(r)
    pred = classes[int(np.argmax(probs))]
    # the pointing tolerance is 15 px of the stored photo; the image may be kept at a smaller working size
    tolerance = POINTING_TOLERANCE_PX * float(getattr(sample, "scale", 1.0) or 1.0)
    rec: dict[str, Any] = {
        "image": sample.name,
        "label": sample.label,
        "acceptable": sorted(sample.acceptable),
        "predicted": pred,
        "probability": float(np.max(probs)),
        "correct": pred in sample.acceptable,
        "labelled_classes": sorted(by_class),
    }
    if not has_regions:
        rec["status"], rec["skip_reason"] = "skipped", "no_annotations"
    elif sample.label == BACKGROUND:
        rec["status"], rec["skip_reason"] = "skipped", "background"
    elif not by_class:
        rec["status"], rec["skip_reason"] = "skipped", "no_regions"
    else:
        rec["status"] = "scored"
        rec["classes"] = {c: region_scores(maps[c], regs, tolerance) for c, regs in sorted(by_class.items())}
        if sample.label in by_class:  # the prediction's map against the primary label's region
            rec["predicted_map"] = {
                "class": pred,
                "against": sample.label,
                **region_scores(maps[pred], by_class[sample.label], tolerance),
            }
    return rec


def write_overlay(
    staging: Path, rel: Path, sample: Sample, rec: dict[str, Any], maps: dict[str, np.ndarray], tag: str = ""
) -> float:
    """The overlay PNG of one image (predicted class's map, plus the primary label's when the answer is wrong) at
    staging/rel (refused outside staging); records rel in `rec`; returns the seconds it took."""
    t0 = time.perf_counter()
    rows = [(f"predicted {rec['predicted']}", maps[rec["predicted"]])]
    if sample.label in maps and sample.label != rec["predicted"]:
        rows.append((f"label {sample.label}", maps[sample.label]))
    verdict = "correct" if rec["correct"] else "wrong"
    title = (
        f"{Path(sample.name).name}: predicted {rec['predicted']} ({rec['probability']:.2f}), "
        f"label {sample.label} - {verdict}" + (f" [{tag}]" if tag else "")
    )
    save_overlay(_inside(staging, staging / rel), sample.image, rows, sample.regions, title, dpi=OVERLAY_DPI)
    rec["overlay"] = rel.as_posix()
    return time.perf_counter() - t0


def split_summary(records: list[dict[str, Any]], ds: Dataset) -> dict[str, Any]:
    scored = [r for r in records if r["status"] == "scored"]
    reasons: dict[str, int] = {}
    for r in records:
        if r["status"] == "skipped":
            reasons[r["skip_reason"]] = reasons.get(r["skip_reason"], 0) + 1
    per_class = [s for r in scored for s in r["classes"].values()]
    pred = [r["predicted_map"] for r in scored if "predicted_map" in r]

    def block(scores: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "n": len(scores),
            "energy_share_mean": rate([s["energy_share"] for s in scores]),
            "energy_chance_mean": rate([s["energy_chance"] for s in scores]),
            "pointing_hit_rate": rate([s["pointing_hit"] for s in scores]),
            "pointing_chance_mean": rate([s["pointing_chance"] for s in scores]),
            "localization_correct_rate": rate([s["localization_correct"] for s in scores]),
            "iou_mean": rate([s["iou"] for s in scores]),
        }

    out = {
        "has_regions": ds.has_regions,
        "localization": "scored" if ds.has_regions else "skipped: the test set has no region annotations",
        "images": len(records),
        "images_scored": len(scored),
        "images_skipped": len(records) - len(scored),
        "skipped": reasons,
        "regions_scored": len(per_class),
        **{k: v for k, v in block(per_class).items() if k != "n"},
        "predicted_map": block(pred),
    }
    return out


def sanity_thumb(m: np.ndarray, side: int = 64) -> np.ndarray:
    """A map subsampled to about `side` pixels on its shorter side: rank correlations over ~4k values, not ~300k."""
    step = max(1, min(m.shape) // side)
    return np.ascontiguousarray(m[::step, ::step])


def _inside(folder: Path, path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise DataError(f"refusing to write {path}: it resolves to {resolved}, outside {folder}")
    return path


def headline(ev: Mapping[str, Any]) -> str:
    """'test_difficult energy 0.354 (uniform 0.117), pointing 0.627 (0.151); sanity rho -0.05' for the log line."""
    parts = []
    for split, s in (ev.get("summary") or {}).items():
        if s.get("images_scored") and s.get("energy_share_mean") is not None:
            parts.append(
                f"{split} energy {s['energy_share_mean']:.3f} (uniform {s['energy_chance_mean']:.3f}), "
                f"pointing {s['pointing_hit_rate']:.3f} ({s['pointing_chance_mean']:.3f})"
            )
    rho = (ev.get("sanity") or {}).get("spearman_mean")
    if rho is not None:
        parts.append(f"sanity rho {rho:.2f}")
    return "; ".join(parts) or "no labelled regions to score"
