"""The black-box saliency step: one method (occlusion, RISE) over a model's test sets -> the <method>.json content.

Shared by `harness run` (a variant's exported model.onnx, a model-agnostic second opinion beside Grad-CAM) and
`harness check` (any ONNX model). The maps are computed on the model's input (the spec's geometry), brought back to
the photo (`harness.preprocess.map_to_image`) and scored exactly as Grad-CAM's are (`harness.saliency.scoring`: energy
share, pointing game, box IoU against the same labelled regions, each beside a uniform map's chance level). The sanity
check (Adebayo et al. 2018) recomputes the maps of the first scored images with a copy of the model whose final
layer(s) are re-drawn (`harness.saliency.sanity.randomize_onnx_head`) and records their Spearman rank correlation.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness import artifacts, runtime
from harness.artifacts import sha256_file
from harness.data import Dataset, Sample
from harness.preprocess import make_forward, map_to_image, prepare
from harness.provenance import dataset_fingerprint
from harness.robustness.maps import MapStore, maps_file
from harness.rundir import is_current, read_variant_config
from harness.saliency.perturbation import Forward
from harness.saliency.registry import get_method, resolve_params, saliency
from harness.saliency.sanity import map_rank_correlation, randomize_onnx_head
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
from harness.spec import ModelSpec, resolve_spec
from harness.testsets import load_test_sets

# Bumped whenever a <method>.json changes meaning or content, so an older one is redone.
# 2: on a test set without labelled regions only the example images' maps (saliency.all_maps, saliency.examples).
EVIDENCE_PROTOCOL = 2


def evidence_inputs(
    onnx_sha256: str,
    datasets: Mapping[str, Dataset],
    method: str,
    params: Mapping[str, Any],
    sanity: Mapping[str, Any] | None,
    spec: Mapping[str, Any],
    *,
    maps: Mapping[str, Any],
) -> dict[str, Any]:
    """What a <method>.json is made from: the ONNX file, the test images, the method, its parameters, the sanity
    settings, which maps a set without regions gets (SaliencySettings.maps_inputs) and the model's I/O contract."""
    return {
        "onnx_sha256": onnx_sha256,
        "test_data": {s: dataset_fingerprint(ds) for s, ds in datasets.items()},
        "method": method,
        "params": dict(params),
        "sanity": dict(sanity) if sanity else None,
        "maps": dict(maps),
        "spec": dict(spec),
        "protocol": EVIDENCE_PROTOCOL,
    }


def blackbox_evidence(
    method: str,
    params: Mapping[str, Any],
    forward: Forward,
    spec: ModelSpec,
    datasets: Mapping[str, Dataset],
    classes: Sequence[str],
    staging: Path | None,
    *,
    label: str = "",
    sanity: Mapping[str, Any] | None = None,
    sanity_forward: Forward | None = None,
    sanity_layers: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    store: MapStore | None = None,
    examples: int | None = None,
) -> dict[str, Any]:
    """Maps, localization scores, chance levels, overlays (under `staging`/<method>/<split>/, when given) and the
    sanity check of one black-box method over `datasets`; the maps also go to `store` when given (the faithfulness
    curves read them). Returns the JSON content (without 'inputs').

    `examples`: on a test set without labelled regions (nothing to score) only this many photos get a map and a
    record (example_indices: the report's overlays); None computes every photo's. Sets with regions get every map."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    m = get_method(method)
    classes = list(classes)
    h_in, w_in = spec.size
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "method": method,
        "params": dict(params),
        "classes": classes,
        "model_input": [h_in, w_in],
        "protocol": {
            "method": m.description(params),
            "passes_per_image_planned": m.passes(h_in, w_in, params),
            "maps": "predicted class and every labelled class present, from the same forward passes; computed on "
            "the model's input and brought back to the photo with the spec's geometry",
            "regions": "union of the class's polygons (box where a region has no polygon)",
            "pointing_tolerance_px": POINTING_TOLERANCE_PX,
            "cam_box_threshold": CAM_BOX_THRESHOLD,
            "iou_threshold": IOU_THRESHOLD,
            "chance": "a uniform map: expected energy share = the region's area fraction; pointing hit rate = the "
            "fraction of pixels within the tolerance of the region",
        },
        "summary": {},
        "images": {},
    }
    kept: list[tuple[Sample, np.ndarray, dict[int, np.ndarray]]] = []
    passes_total, n_images, overlay_seconds = 0, 0, 0.0
    want = int(sanity["images"]) if sanity else 0
    for split, ds in datasets.items():
        records = []
        chosen = example_indices(ds, examples) if examples is not None and not ds.has_regions else None
        for sample in ds.samples if chosen is None else [ds.samples[i] for i in chosen]:
            x = prepare(spec, [sample.image])[0]
            probs0 = forward(x[None])[0]
            targets = sorted({classes.index(r.label) for r in sample.regions} | {int(np.argmax(probs0))})
            res = saliency(method, forward, x, targets, params, where=f"saliency.{method}")
            passes_total += res.passes + 1
            h, w = sample.image.shape[1:]
            maps = {classes[i]: map_to_image(spec, mp, (h, w)) for i, mp in res.maps.items()}
            if store is not None:
                store.add(split, sample.name, {classes[i]: mp for i, mp in res.maps.items()})
            rec = image_record(sample, classes, res.probabilities, maps, ds.has_regions)
            rec["passes"] = res.passes + 1
            if rec["status"] == "scored" and len(kept) < want:
                kept.append((sample, x, {classes.index(c): res.maps[classes.index(c)] for c in rec["classes"]}))
            if staging is not None:
                rel = Path(method) / overlay_path(split, sample.name).relative_to("cam")
                overlay_seconds += write_overlay(staging, rel, sample, rec, maps, tag=method)
            records.append(rec)
        n_images += len(records)
        out["summary"][split] = split_summary(records, ds) | {
            "images_in_set": len(ds.samples),
            "maps": "every photo"
            if chosen is None
            else f"{len(records)} example photos (no labelled regions to score; saliency.all_maps = true for all)",
        }
        out["images"][split] = records
    out["sanity"] = (
        _sanity(method, params, kept, sanity, sanity_forward, sanity_layers)
        if sanity
        else {"skipped": "saliency.sanity = false", "spearman_mean": None}
    )
    seconds = time.perf_counter() - t0
    sanity_s = float(out["sanity"].get("seconds") or 0.0)
    out["seconds"] = seconds
    out["passes_per_image"] = passes_total / max(n_images, 1)
    out["seconds_per_image"] = (seconds - sanity_s - overlay_seconds) / max(n_images, 1)  # maps + scoring only
    out["seconds_per_image_overlays"] = overlay_seconds / max(n_images, 1)
    log(
        f"[{label}] {method}: {n_images} images, {out['seconds_per_image']:.2f} s/image "
        f"({out['passes_per_image']:.0f} passes); " + headline(out)
    )
    return out


def example_indices(ds: Dataset, n: int) -> list[int]:
    """The first `n` photos of a test set taking one class at a time (round robin over the classes in the order they
    first appear), so the examples show several classes; in the set's order."""
    by_class: dict[str, list[int]] = {}
    for i, s in enumerate(ds.samples):
        by_class.setdefault(s.label, []).append(i)
    queues = list(by_class.values())
    picked: list[int] = []
    while len(picked) < min(n, len(ds.samples)):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return sorted(picked)


def _sanity(
    method: str,
    params: Mapping[str, Any],
    kept: Sequence[tuple[Sample, np.ndarray, dict[int, np.ndarray]]],
    sanity: Mapping[str, Any],
    sanity_forward: Forward | None,
    layers: Sequence[str],
) -> dict[str, Any]:
    """The randomisation test of one method: its maps of the `kept` images with the randomised model's forward,
    against the trained model's (Spearman rank correlation of the thumbnails)."""
    if not kept:
        return {"spearman_mean": None, "skipped": "no scored image to compare", "images": 0}
    if sanity_forward is None:
        raise ValueError("a sanity check was asked for without the randomised model's forward")
    t0 = time.perf_counter()
    rhos: list[float] = []
    per_map: list[dict[str, Any]] = []
    for sample, x, maps in kept:
        res = saliency(method, sanity_forward, x, sorted(maps), params, where=f"saliency.{method}")
        for c, mp in maps.items():
            rho = map_rank_correlation(sanity_thumb(mp), sanity_thumb(res.maps[c]))
            rhos.append(rho)
            per_map.append({"image": sample.name, "class_index": c, "spearman": rho})
    return {
        "method": "model-parameter randomisation (Adebayo et al. 2018): final layer(s) of the ONNX graph "
        "re-drawn, Spearman rank correlation of the maps",
        "randomised": list(layers),
        **dict(sanity),
        "images": len(kept),
        "maps": len(rhos),
        "spearman_mean": float(np.mean(rhos)),
        "spearman_max": float(np.max(rhos)),
        "per_map": per_map,
        "seconds": time.perf_counter() - t0,
    }


def write_evidence(folder: Path, method: str, content: dict[str, Any], staging: Path | None) -> Path:
    """Replace <folder>/<method>.json and <folder>/<method>/ with the new ones (JSON last: it marks completion)."""
    out_json = folder / f"{method}.json"
    out_json.unlink(missing_ok=True)
    if staging is not None and (staging / method).exists():
        old = folder / f".cam-old-{method}-{os.getpid()}"
        if (folder / method).exists():
            os.replace(folder / method, old)
        os.replace(staging / method, folder / method)
        shutil.rmtree(old, ignore_errors=True)
    return artifacts.write_json(out_json, content)


def evidence_step(
    folder: Path,
    method: str,
    params: Mapping[str, Any],
    forward: Forward,
    spec: ModelSpec,
    datasets: Mapping[str, Dataset],
    classes: Sequence[str],
    onnx_path: Path,
    settings: SaliencySettings,
    inputs: Mapping[str, Any],
    backbone: str | None,
    *,
    overlays: bool = True,
    no_head: Callable[[ValueError], None] | None = None,
) -> dict[str, Any]:
    """One black-box method on the model of the folder `folder` (its name is the variant): the sanity check's
    randomised copy of `onnx_path`, blackbox_evidence, then <folder>/<method>.json (with `inputs`, the model's
    `backbone` and spec) and its overlays written by write_evidence; returns the JSON content. Work happens in a
    staging folder inside `folder`, removed at the end. A model with no final weight initializer to re-draw raises
    ValueError, or, given `no_head`, is passed to it and its sanity check is recorded as impossible."""
    sanity = settings.sanity_inputs()
    staging = folder / f".cam-staging-{method}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    store = MapStore(spec.size)
    try:
        sanity_forward, names = (None, list[str]())
        if sanity:
            try:
                sanity_forward, names = onnx_sanity_forward(
                    onnx_path, staging / ".model", spec, classes, settings.sanity_seed, settings.sanity_layers
                )
            except ValueError as exc:  # no final weight initializer to re-draw
                if no_head is None:
                    raise
                no_head(exc)
        content = blackbox_evidence(
            method,
            params,
            forward,
            spec,
            datasets,
            classes,
            staging if overlays else None,
            label=folder.name,
            sanity=sanity if sanity_forward is not None else None,
            sanity_forward=sanity_forward,
            sanity_layers=names,
            store=store,
            examples=None if settings.all_maps else settings.examples,
        )
        if sanity and sanity_forward is None:
            content["sanity"] = {
                "spearman_mean": None,
                "impossible": True,
                "skipped": "the model has no final weight initializer to randomise",
            }
        content = {"variant": folder.name, "backbone": backbone, "inputs": inputs, "spec": spec.to_dict(), **content}
        store.save(folder / maps_file(method))  # before the JSON, which marks completion
        write_evidence(folder, method, content, staging if overlays else None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return content


def onnx_sanity_forward(
    onnx_path: Path, staging: Path, spec: ModelSpec, classes: Sequence[str], seed: int, layers: int
) -> tuple[Forward, list[str]]:
    """(forward of a copy of the ONNX model with its final layer(s) re-drawn, names re-drawn); the copy is written
    into `staging` (inside the run directory) so onnxruntime can load it like any model file."""
    proto = onnx.load(str(onnx_path))
    randomised, names = randomize_onnx_head(proto, seed=seed, layers=layers)
    del proto
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / "randomised.onnx"
    onnx.save(randomised, str(path))
    session = runtime.create_session(path, [runtime.CPU])
    return make_forward(session, spec, classes), names


def variant_blackbox(
    vdir: Path,
    method: str,
    force: bool = False,
    data_root: Path | None = None,
    overlays: bool = True,
    *,
    tests: Mapping[str, Dataset] | None = None,
) -> dict[str, Any]:
    """The black-box saliency step of one harness-trained variant: its exported model.onnx through onnxruntime
    (the spec comes from the export's metadata) -> <vdir>/<method>.json and overlays; redone when stale.
    `tests`: the test sets already decoded by the caller (harness.testsets.load_test_sets), by split;
    a test set of the profile not among them (or every one, without `tests`) is loaded here."""
    vdir = Path(vdir)
    config, profile = read_variant_config(vdir, data_root)
    onnx_path = vdir / "model.onnx"
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path} is missing; run `harness export {vdir.parent}` first")
    classes = list(config["classes"])
    settings = profile.saliency or SaliencySettings()
    params = dict(settings.params.get(method) or {})
    if not params:
        params = resolve_params(method, {}, f"{vdir / 'config.json'}: saliency.{method}")
    datasets = load_test_sets(config["data_root"], profile.test_sets, classes, profile.image_size, tests)
    session = runtime.create_session(onnx_path, [runtime.CPU])
    spec = resolve_spec(onnx_path, {}, classes, session=session)
    sanity = settings.sanity_inputs()
    made_from = evidence_inputs(
        sha256_file(onnx_path), datasets, method, params, sanity, spec.to_dict(), maps=settings.maps_inputs()
    )
    out_json = vdir / f"{method}.json"
    if not force and is_current(out_json, made_from):
        print(f"[{vdir.name}] {method}.json is current, skipping (--force to redo)", file=sys.stderr)
        return artifacts.read_json(out_json)
    return evidence_step(
        vdir,
        method,
        params,
        make_forward(session, spec, classes),
        spec,
        datasets,
        classes,
        onnx_path,
        settings,
        made_from,
        config.get("backbone"),
        overlays=overlays,
    )
