"""The cam step: Grad-CAM maps, localization scores and overlays of every test image, per variant -> cam.json."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import artifacts
from harness.backbones import get_backbone
from harness.data import DataError, Dataset, Region, Sample, load_test, resize_batch, working_short_side
from harness.export import variant_dirs
from harness.saliency import localization
from harness.saliency.gradcam import gradcam_maps, save_overlay
from harness.saliency.settings import SaliencySettings
from harness.train import load_checkpoint, pick_device

# Protocol parameters, recorded in every cam.json.
POINTING_TOLERANCE_PX = 15.0  # Zhang et al. 2016
CAM_BOX_THRESHOLD = 0.15  # Selvaraju et al. 2017: the CAM box keeps pixels >= 15% of the map's maximum
IOU_THRESHOLD = 0.5  # ILSVRC localization criterion
BACKGROUND = "background"
OVERLAY_DPI = 72
# Bumped whenever the evidence a cam.json holds changes meaning or content (2: chance levels, sanity check), so that
# an older cam.json is redone instead of being judged on fields it does not have.
CAM_PROTOCOL = 2


def _rate(values: Sequence[Any]) -> float | None:
    return float(np.mean([float(v) for v in values])) if values else None


def _scores(cam: np.ndarray, regions: Sequence[Region], tolerance_px: float = POINTING_TOLERANCE_PX) -> dict[str, Any]:
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


def _overlay_path(split: str, name: str) -> Path:
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
        rec["classes"] = {c: _scores(maps[c], regs, tolerance) for c, regs in sorted(by_class.items())}
        if sample.label in by_class:  # the prediction's map against the primary label's region
            rec["predicted_map"] = {
                "class": pred,
                "against": sample.label,
                **_scores(maps[pred], by_class[sample.label], tolerance),
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


def cam_image(
    model: torch.nn.Module, layer: str, image_size: int, classes: Sequence[str], sample: Sample, has_regions: bool
) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """Maps and localization scores of one test image: (record, {class: map}, probabilities)."""
    labelled = sorted({r.label for r in sample.regions})
    x = resize_batch([sample.image], image_size)[0].float().div_(255)
    h, w = sample.image.shape[1:]
    probs, maps_idx = gradcam_maps(model, layer, x, [classes.index(c) for c in labelled], (h, w), predicted=True)
    maps = {classes[i]: m for i, m in maps_idx.items()}
    rec = image_record(sample, classes, probs, maps, has_regions)
    return rec, maps, probs


def _summary(records: list[dict[str, Any]], ds: Dataset) -> dict[str, Any]:
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
            "energy_share_mean": _rate([s["energy_share"] for s in scores]),
            "energy_chance_mean": _rate([s["energy_chance"] for s in scores]),
            "pointing_hit_rate": _rate([s["pointing_hit"] for s in scores]),
            "pointing_chance_mean": _rate([s["pointing_chance"] for s in scores]),
            "localization_correct_rate": _rate([s["localization_correct"] for s in scores]),
            "iou_mean": _rate([s["iou"] for s in scores]),
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


def gradcam_sanity(
    model: torch.nn.Module,
    layer: str,
    image_size: int,
    classes: Sequence[str],
    kept: Sequence[tuple[Sample, dict[str, np.ndarray]]],
    sanity: dict[str, Any],
) -> dict[str, Any]:
    """Model-parameter randomisation test (Adebayo et al. 2018): Grad-CAM maps of a copy of the model whose last
    layer(s) are re-initialised, against the trained model's maps of the same images and classes (Spearman)."""
    import copy

    from harness.saliency.sanity import map_rank_correlation, randomize_torch_head

    if not kept:
        return {"spearman_mean": None, "skipped": "no scored image to compare", "images": 0}
    t0 = time.perf_counter()
    randomised = copy.deepcopy(model)
    names = randomize_torch_head(randomised, seed=int(sanity["seed"]), layers=int(sanity["layers"]))
    rhos: list[float] = []
    per_image = []
    for sample, maps in kept:
        x = resize_batch([sample.image], image_size)[0].float().div_(255)
        h, w = sample.image.shape[1:]
        _, rmaps = gradcam_maps(randomised, layer, x, [classes.index(c) for c in maps], (h, w))
        for c, m in maps.items():
            rho = map_rank_correlation(m, sanity_thumb(rmaps[classes.index(c)]))
            rhos.append(rho)
            per_image.append({"image": sample.name, "class": c, "spearman": rho})
    del randomised
    return {
        "method": "model-parameter randomisation (Adebayo et al. 2018): last layer(s) re-initialised, "
        "Spearman rank correlation of the maps",
        "randomised": names,
        **sanity,
        "images": len(kept),
        "maps": len(rhos),
        "spearman_mean": float(np.mean(rhos)),
        "spearman_max": float(np.max(rhos)),
        "per_map": per_image,
        "seconds": time.perf_counter() - t0,
    }


def cam_inputs(vdir: Path, datasets: dict[str, Dataset], sanity: dict[str, Any] | None = None) -> dict[str, Any]:
    """What cam.json is made from: the checkpoint (sha256) and the test images (fingerprints) of each split."""
    from harness.export import sha256_file
    from harness.provenance import dataset_fingerprint

    return {
        "model_sha256": sha256_file(Path(vdir) / "model.pt"),
        "test_data": {split: dataset_fingerprint(ds) for split, ds in datasets.items()},
        "protocol": CAM_PROTOCOL,
        "sanity": sanity or None,
    }


def cam_is_current(vdir: Path, inputs: dict[str, Any]) -> bool:
    try:
        rec = artifacts.read_json(Path(vdir) / "cam.json")
    except (FileNotFoundError, ValueError):
        return False
    return isinstance(rec, dict) and rec.get("inputs") == inputs


def _inside(folder: Path, path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise DataError(f"refusing to write {path}: it resolves to {resolved}, outside {folder}")
    return path


def cam_variant(
    vdir: Path,
    force: bool = False,
    splits: Sequence[str] | None = None,
    overlays: bool = True,
    data_root: Path | None = None,
) -> dict[str, Any]:
    """Run the cam step for one variant folder; returns the cam.json content (read back when already current).

    Everything that can fail on input (config, checkpoint, test sets) is read first; maps and overlays are computed
    into a staging folder, and only then do the new cam/ and cam.json replace the old ones. cam.json records what it
    was made from (checkpoint sha256, test-set fingerprints); a stale one is redone without --force.
    """
    from harness.export import read_variant_config

    vdir = Path(vdir)
    out_json = vdir / "cam.json"
    config, profile = read_variant_config(vdir, data_root)
    model, meta = load_checkpoint(vdir / "model.pt")
    classes = list(meta["classes"])
    splits = list(splits) if splits else list(profile.test_sets)
    datasets = {
        split: load_test(
            Path(config["data_root"]), split, classes, max_short_side=working_short_side(int(meta["image_size"]))
        )
        for split in splits
    }
    settings = profile.saliency or SaliencySettings()
    sanity = settings.sanity_inputs()
    made_from = cam_inputs(vdir, datasets, sanity)
    if not force and cam_is_current(vdir, made_from):
        print(f"[{vdir.name}] cam.json is current, skipping (--force to redo)", file=sys.stderr)
        return artifacts.read_json(out_json)
    device = pick_device(profile.device)
    model.to(device)
    backbone = get_backbone(meta["backbone"])
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "variant": vdir.name,
        "backbone": meta["backbone"],
        "layer": backbone.cam_layer,
        "image_size": int(meta["image_size"]),
        "classes": classes,
        "device": device.type,
        "inputs": made_from,
        "protocol": {
            "method": "Grad-CAM (Selvaraju et al. 2017): channel weights = mean gradient of the class logit, "
            "ReLU, bilinear upsampling to the original image, divided by the maximum",
            "maps": "predicted class and every labelled class present; localization of a class uses its own map",
            "regions": "union of the class's polygons (box where a region has no polygon)",
            "pointing_tolerance_px": POINTING_TOLERANCE_PX,
            "cam_box_threshold": CAM_BOX_THRESHOLD,
            "iou_threshold": IOU_THRESHOLD,
            "skipped": "images whose primary label is background, with no regions, or from a test set without "
            "region annotations",
            "overlays": "predicted-class map, plus the primary label's map when the prediction differs",
        },
        "summary": {},
        "images": {},
    }
    staging = vdir / f".cam-staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    kept: list[tuple[Sample, dict[str, np.ndarray]]] = []  # maps of the first scored images, for the sanity check
    try:
        n_images, overlay_seconds = 0, 0.0
        for split, ds in datasets.items():
            records = []
            for sample in ds.samples:
                rec, maps, _ = cam_image(
                    model, backbone.cam_layer, int(meta["image_size"]), classes, sample, ds.has_regions
                )
                if sanity and rec["status"] == "scored" and len(kept) < sanity["images"]:
                    kept.append((sample, {c: sanity_thumb(maps[c]) for c in rec["classes"]}))
                if overlays:
                    overlay_seconds += write_overlay(staging, _overlay_path(split, sample.name), sample, rec, maps)
                records.append(rec)
            n_images += len(records)
            result["summary"][split] = _summary(records, ds)
            result["images"][split] = records
        result["sanity"] = (
            gradcam_sanity(model, backbone.cam_layer, int(meta["image_size"]), classes, kept, sanity)
            if sanity
            else {"skipped": "saliency.sanity = false"}
        )
        seconds = time.perf_counter() - t_start
        result["seconds"] = seconds
        result["seconds_per_image"] = seconds / max(n_images, 1)
        result["seconds_per_image_overlays"] = overlay_seconds / max(n_images, 1)  # part of seconds_per_image
        # success: only now does the old evidence go (cam.json first, so a crash in between leaves "not done")
        out_json.unlink(missing_ok=True)
        if overlays:
            old = vdir / f".cam-old-{os.getpid()}"
            if (vdir / "cam").exists():
                os.replace(vdir / "cam", old)
            if (staging / "cam").exists():
                os.replace(staging / "cam", vdir / "cam")
            shutil.rmtree(old, ignore_errors=True)
        artifacts.write_json(out_json, result)
        from harness.saliency.evidence import headline

        print(
            f"[{vdir.name}] Grad-CAM: {n_images} images, {result['seconds_per_image']:.2f} s/image; "
            + headline(result),
            file=sys.stderr,
            flush=True,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def cam_run(
    run_dir: Path, force: bool = False, splits: Sequence[str] | None = None, data_root: Path | None = None
) -> dict[str, dict[str, Any]]:
    """The cam step for every trained variant of a run directory: {variant folder name: cam.json content}."""
    return {v.name: cam_variant(v, force, splits, data_root=data_root) for v in variant_dirs(run_dir)}
