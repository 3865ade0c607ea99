"""The cam step: Grad-CAM maps, localization scores and overlays of every test image, per variant -> cam.json."""

from __future__ import annotations

import copy
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import artifacts
from harness.artifacts import sha256_file
from harness.backbones import get_backbone
from harness.data import Dataset, Sample, resize_batch
from harness.provenance import dataset_fingerprint
from harness.robustness.maps import MapStore, maps_file
from harness.rundir import is_current, read_variant_config, variant_dirs
from harness.saliency.gradcam import gradcam_maps
from harness.saliency.sanity import map_rank_correlation, randomize_torch_head
from harness.saliency.scoring import (
    CAM_BOX_THRESHOLD,
    IOU_THRESHOLD,
    POINTING_TOLERANCE_PX,
    headline,
    image_record,
    overlay_path,
    sanity_thumb,
    split_summary,
    write_overlay,
)
from harness.saliency.settings import SaliencySettings
from harness.testsets import load_test_sets
from harness.train import load_checkpoint, pick_device

# Bumped whenever the evidence a cam.json holds changes meaning or content (2: chance levels, sanity check), so that
# an older cam.json is redone instead of being judged on fields it does not have.
CAM_PROTOCOL = 2


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
    return {
        "model_sha256": sha256_file(Path(vdir) / "model.pt"),
        "test_data": {split: dataset_fingerprint(ds) for split, ds in datasets.items()},
        "protocol": CAM_PROTOCOL,
        "sanity": sanity or None,
    }


def cam_variant(
    vdir: Path,
    force: bool = False,
    splits: Sequence[str] | None = None,
    overlays: bool = True,
    data_root: Path | None = None,
    *,
    tests: Mapping[str, Dataset] | None = None,
) -> dict[str, Any]:
    """Run the cam step for one variant folder; returns the cam.json content (read back when already current).

    Everything that can fail on input (config, checkpoint, test sets) is read first; maps and overlays are computed
    into a staging folder, and only then do the new cam/ and cam.json replace the old ones. cam.json records what it
    was made from (checkpoint sha256, test-set fingerprints); a stale one is redone without --force.
    `tests`: the test sets already decoded by the caller (harness.testsets.load_test_sets), by split;
    a split not among them (or every split, without `tests`) is loaded here.
    """
    vdir = Path(vdir)
    out_json = vdir / "cam.json"
    config, profile = read_variant_config(vdir, data_root)
    model, meta = load_checkpoint(vdir / "model.pt")
    classes = list(meta["classes"])
    splits = list(splits) if splits else list(profile.test_sets)
    datasets = load_test_sets(config["data_root"], splits, classes, int(meta["image_size"]), tests)
    settings = profile.saliency or SaliencySettings()
    sanity = settings.sanity_inputs()
    made_from = cam_inputs(vdir, datasets, sanity)
    if not force and is_current(out_json, made_from):
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
    store = MapStore((int(meta["image_size"]), int(meta["image_size"])))  # the maps, for the faithfulness curves
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
                store.add(split, sample.name, maps)
                if overlays:
                    overlay_seconds += write_overlay(staging, overlay_path(split, sample.name), sample, rec, maps)
                records.append(rec)
            n_images += len(records)
            result["summary"][split] = split_summary(records, ds)
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
        store.save(vdir / maps_file("cam"))
        if overlays:
            old = vdir / f".cam-old-{os.getpid()}"
            if (vdir / "cam").exists():
                os.replace(vdir / "cam", old)
            if (staging / "cam").exists():
                os.replace(staging / "cam", vdir / "cam")
            shutil.rmtree(old, ignore_errors=True)
        artifacts.write_json(out_json, result)
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
