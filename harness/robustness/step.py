"""The robustness step of one model folder: robustness.json (every photo's answer under each corruption and severity,
and under object masking, with flip thumbnails under robustness/) and faithfulness.json (deletion / insertion curves
of every saliency method's stored maps beside a random map's), through ONE onnxruntime session on the exported model.

Shared by `harness run` (after the saliency steps: `variant_robustness`) and `harness check` (`robustness_step` on
any ONNX model). Each file records the inputs it was made from (the ONNX file's sha256, the test images'
fingerprints, the spec, the settings; for faithfulness.json also each maps file's sha256), so a crashed run resumes
and a changed setting, model or map redoes what is stale (harness.rundir.is_current). A step that is switched off
removes its older evidence: no verdict is ever read from a file made under another protocol.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import artifacts, runtime
from harness.artifacts import sha256_file
from harness.data import Dataset
from harness.preprocess import make_forward
from harness.provenance import fingerprints
from harness.robustness import evidence
from harness.robustness.batching import Forward
from harness.robustness.corruptions import CORRUPTIONS
from harness.robustness.faithfulness import BLUR_SIGMA_224, RANDOM_GRID
from harness.robustness.files import FAITHFULNESS_FILE, ROBUSTNESS_FILE, THUMBS
from harness.robustness.maps import load_maps, maps_file
from harness.robustness.masking import GREY, TRIES
from harness.robustness.measures import corruption_summary, masking_summary
from harness.robustness.settings import RobustnessSettings
from harness.rundir import is_current, read_variant_config
from harness.saliency.registry import method_info
from harness.spec import ModelSpec, resolve_spec
from harness.testsets import load_test_sets

EVIDENCE_PROTOCOL = 1  # bumped whenever either file changes meaning, so an older one is redone


def _inputs(model_sha: str, datasets: Mapping[str, Dataset], spec: ModelSpec, settings: dict) -> dict[str, Any]:
    return {
        "onnx_sha256": model_sha,
        "test_data": fingerprints(datasets),
        "spec": spec.to_dict(),
        "settings": settings,
        "protocol": EVIDENCE_PROTOCOL,
    }


def _protocol(settings: RobustnessSettings, spec: ModelSpec) -> dict[str, Any]:
    return {
        "applied": f"on the model's input ({spec.size[0]} x {spec.size[1]}, after the spec's resize), as ImageNet-C "
        "corrupts the 224 x 224 network input; pixel constants scaled by min(H, W) / 224",
        "corruptions": {
            n: {"title": c.title, "definition": c.definition, "source": c.source, "constants": list(c.constants)}
            for n, c in CORRUPTIONS.items()
            if n in settings.corruptions
        },
        "severities": list(settings.severities),
        "deterministic": "numpy generator seeded from the sha256 of the photo's input pixels, the corruption, the "
        f"severity and seed {settings.seed}",
        "masking": {
            "hidden": f"the labelled regions' union filled with {settings.fill}"
            + (f" ({GREY})" if settings.fill == "grey" else " (Gaussian, sigma min(H, W) / 16)"),
            "control": f"the same shape shifted inside the input, the least overlapping of {TRIES} uniform offsets, "
            f"{settings.draws} draws per photo",
            "kept": f"only the labelled regions, the rest grey ({GREY})",
            "lost": "the answer is no longer one of the photo's acceptable labels",
        }
        if settings.masking
        else None,
    }


def _clean(folder: Path, name: str) -> None:
    (folder / name).unlink(missing_ok=True)
    if name == ROBUSTNESS_FILE:
        shutil.rmtree(folder / THUMBS, ignore_errors=True)


def remove_evidence(folder: Path) -> None:
    """robustness.json, faithfulness.json and the flip thumbnails of a folder, gone (robustness.enabled = false)."""
    _clean(Path(folder), ROBUSTNESS_FILE)
    _clean(Path(folder), FAITHFULNESS_FILE)


def robustness_evidence(
    folder: Path,
    forward: Forward,
    spec: ModelSpec,
    datasets: Mapping[str, Dataset],
    classes: Sequence[str],
    settings: RobustnessSettings,
    images: Mapping[str, Any],
    clean: Mapping[str, Any],
) -> dict[str, Any]:
    """robustness.json's content (without variant, backbone, inputs); thumbnails into `folder`/robustness/."""
    t0 = time.perf_counter()
    staging = folder / f".robustness-staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    out: dict[str, Any] = {
        "classes": list(classes),
        "protocol": _protocol(settings, spec),
        "corruptions": list(settings.corruptions),
        "severities": list(settings.severities),
        "images": {},
        "masking": {} if settings.masking else None,
    }
    passes, seconds = 0, {"corruptions": 0.0, "masking": 0.0}
    try:
        for split, ds in datasets.items():
            t = time.perf_counter()
            recs, n = evidence.corruption_records(
                forward, ds, images[split], clean[split], classes, settings, staging, split
            )
            out["images"][split], passes = recs, passes + n
            seconds["corruptions"] += time.perf_counter() - t
            if settings.masking:
                t = time.perf_counter()
                recs, n = evidence.masking_records(forward, spec, ds, images[split], clean[split], classes, settings)
                out["masking"][split] = {"has_regions": ds.has_regions, "images": recs}
                passes += n
                seconds["masking"] += time.perf_counter() - t
        shutil.rmtree(folder / THUMBS, ignore_errors=True)
        if (staging / THUMBS).exists():
            os.replace(staging / THUMBS, folder / THUMBS)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out | {"passes": passes, "seconds": seconds | {"total": time.perf_counter() - t0}}


def faithfulness_evidence(
    forward: Forward,
    datasets: Mapping[str, Dataset],
    classes: Sequence[str],
    settings: RobustnessSettings,
    maps: Mapping[str, Path],
    images: Mapping[str, Any],
    clean: Mapping[str, Any],
) -> dict[str, Any]:
    """faithfulness.json's content (without variant, backbone, inputs): the curves of every method whose maps file
    is there (the others named with why not)."""
    t0 = time.perf_counter()
    methods: dict[str, Any] = {}
    stores = {}
    for key, path in maps.items():
        if not path.is_file():
            methods[key] = {"skipped": f"{path.name} missing: rerun its saliency step (--force) to store its maps"}
            continue
        try:
            stores[key] = load_maps(path)
        except ValueError as exc:
            methods[key] = {"skipped": str(exc)}
            continue
        photos: dict[str, set[str]] = {}
        for split, image, _ in stores[key]:
            photos.setdefault(split, set()).add(image)
        # a black-box method maps only a few example photos of a set without regions (saliency.all_maps): its curves
        # are over the photos it has a map of, counted here per test set
        methods[key] = {
            "maps_file": path.name,
            "maps": len(stores[key]),
            "photos": {split: len(names) for split, names in sorted(photos.items())},
        }
    out: dict[str, Any] = {
        "classes": list(classes),
        "protocol": {
            "method": "deletion and insertion curves (Petsiuk et al. 2018) of the predicted class, "
            f"{settings.steps} steps; deletion to black, insertion from a Gaussian blur (sigma {BLUR_SIGMA_224} px "
            f"at 224 px); AUC by the trapezoid rule",
            "control": f"a random map: uniform noise on a {RANDOM_GRID} x {RANDOM_GRID} grid, upsampled bilinearly "
            "(Quantus' random baseline); ties broken by a seeded random order",
            "steps": settings.steps,
        },
        "methods": methods,
        "images": {},
    }
    passes = 0
    if stores:
        for split, ds in datasets.items():
            recs, n = evidence.faithfulness_records(
                forward, ds, images[split], clean[split], classes, stores, settings, split
            )
            out["images"][split], passes = recs, passes + n
    return out | {"passes": passes, "seconds": time.perf_counter() - t0}


def robustness_step(
    folder: Path,
    forward: Forward,
    spec: ModelSpec,
    datasets: Mapping[str, Dataset],
    classes: Sequence[str],
    settings: RobustnessSettings,
    model_sha: str,
    backbone: str | None,
    methods: Sequence[str] = (),
    *,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """robustness.json and faithfulness.json of the model in `folder` (`methods`: the saliency methods whose stored
    maps the curves read, by registry name or evidence key); each redone only when stale (or `force`). Returns
    {file name: content} of the files written or found current."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    folder = Path(folder)
    if not settings.enabled:
        remove_evidence(folder)
        return {}
    head = {"variant": folder.name, "backbone": backbone, "spec": spec.to_dict()}
    todo: dict[str, dict[str, Any]] = {}
    done: dict[str, Any] = {}
    rob_in = _inputs(model_sha, datasets, spec, settings.corruption_inputs())
    keys = [method_info(m).evidence for m in methods]
    maps = {k: folder / maps_file(k) for k in keys}
    faith_in = _inputs(model_sha, datasets, spec, settings.faithfulness_inputs()) | {
        "maps": {k: sha256_file(p) if p.is_file() else None for k, p in maps.items()}
    }
    for name, inputs, wanted in (
        (ROBUSTNESS_FILE, rob_in, True),
        (FAITHFULNESS_FILE, faith_in, settings.faithfulness and bool(keys)),
    ):
        if not wanted:
            _clean(folder, name)
        elif force or not is_current(folder / name, inputs):
            todo[name] = inputs
        else:
            log(f"[{folder.name}] {name} is current, skipping (--force to redo)")
            done[name] = artifacts.read_json(folder / name)
    if not todo:
        return done
    t0 = time.perf_counter()
    images = {split: evidence.input_images(spec, ds) for split, ds in datasets.items()}
    clean = {s: evidence.clean_probabilities(forward, images[s], settings.batch) for s in datasets}
    if ROBUSTNESS_FILE in todo:
        _clean(folder, ROBUSTNESS_FILE)
        content = robustness_evidence(folder, forward, spec, datasets, classes, settings, images, clean)
        done[ROBUSTNESS_FILE] = head | {"inputs": todo[ROBUSTNESS_FILE]} | content
        artifacts.write_json(folder / ROBUSTNESS_FILE, done[ROBUSTNESS_FILE])
        log(f"[{folder.name}] robustness: " + headline(done[ROBUSTNESS_FILE]))
    if FAITHFULNESS_FILE in todo:
        _clean(folder, FAITHFULNESS_FILE)
        content = faithfulness_evidence(forward, datasets, classes, settings, maps, images, clean)
        done[FAITHFULNESS_FILE] = head | {"inputs": todo[FAITHFULNESS_FILE]} | content
        artifacts.write_json(folder / FAITHFULNESS_FILE, done[FAITHFULNESS_FILE])
        log(f"[{folder.name}] faithfulness: {content['passes']} passes, {content['seconds']:.1f} s")
    log(f"[{folder.name}] robustness step {time.perf_counter() - t0:.1f} s")
    return done


def headline(ev: Mapping[str, Any]) -> str:
    """'26 photos, 11 corruptions x severities [1], 585 passes, 9.8 s; worst drop jpeg s1 0.15 (test_difficult);
    object hidden 0.80 vs elsewhere 0.05' for the log line."""
    worst: tuple[float, str] = (float("-inf"), "")
    for split, recs in (ev.get("images") or {}).items():
        for c in ev.get("corruptions") or []:
            for s in ev.get("severities") or []:
                d = corruption_summary(recs, c, s)["drop"] if recs else float("-inf")
                worst = max(worst, (d, f"{c} s{s} {d:.2f} ({split})"))
    parts = [
        f"{sum(len(r) for r in (ev.get('images') or {}).values())} photos, {len(ev.get('corruptions') or [])} "
        f"corruptions x severities {ev.get('severities')}, {ev.get('passes')} passes, "
        f"{(ev.get('seconds') or {}).get('total', 0.0):.1f} s"
    ]
    if worst[1]:
        parts.append(f"worst drop {worst[1]}")
    for split, m in (ev.get("masking") or {}).items():
        s = masking_summary(m.get("images") or [])
        if s.get("n"):
            parts.append(f"{split}: object hidden {s['object_lost']:.2f} vs elsewhere {s['random_lost']:.2f}")
    return "; ".join(parts)


def variant_robustness(
    vdir: Path,
    force: bool = False,
    data_root: Path | None = None,
    *,
    tests: Mapping[str, Dataset] | None = None,
    methods: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The robustness step of one harness-trained variant: its exported model.onnx through one onnxruntime session
    (the spec from the export's metadata), its profile's [robustness] settings, the faithfulness curves of `methods`
    (default: every saliency method of its profile; a job passes those it computed, saliency.black_box_scope)."""
    vdir = Path(vdir)
    config, profile = read_variant_config(vdir, data_root)
    settings = profile.robustness
    if not settings.enabled:
        remove_evidence(vdir)
        return {}
    onnx_path = vdir / "model.onnx"
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path} is missing; run `harness export {vdir.parent}` first")
    classes = list(config["classes"])
    datasets = load_test_sets(config["data_root"], profile.test_sets, classes, profile.image_size, tests)
    session = runtime.create_session(onnx_path, [runtime.CPU])
    spec = resolve_spec(onnx_path, {}, classes, session=session)
    return robustness_step(
        vdir,
        make_forward(session, spec, classes, batch=settings.batch),
        spec,
        datasets,
        classes,
        settings,
        sha256_file(onnx_path),
        config.get("backbone"),
        profile.saliency.methods if methods is None else methods,
        force=force,
    )
