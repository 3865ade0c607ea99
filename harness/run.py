"""The matrix: train -> export -> evaluate -> cam for every (variant, seed), then verdicts and reports; resumable."""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from harness import artifacts
from harness.config import Profile, split_variant
from harness.thresholds import Thresholds


REPORTS = Path("reports")


def default_run_dir(profile: Profile, reports: Path = REPORTS) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return reports / "runs" / f"{stamp}-{profile.name}-{profile.backbone}"


def point_latest(run_dir: Path, reports: Path = REPORTS) -> Path | None:
    """<reports>/latest -> runs/<id>, replaced atomically; only for run dirs laid out as <reports>/runs/<id> under
    the project's own reports folder (never in the grandparent of any folder that happens to be called runs)."""
    run_dir = Path(run_dir)
    if run_dir.resolve().parent != (Path(reports) / "runs").resolve():
        return None
    latest = Path(reports) / "latest"
    tmp = latest.with_name(f".latest.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path("runs") / run_dir.name)
    os.replace(tmp, latest)
    return latest


def protocol(profile: Profile, thresholds: Thresholds, data_root: Path, variants: Sequence[str], seeds: Sequence[int],
             weights_file: Path | None, data: dict | None = None, notes: Sequence[str] = ()) -> dict:
    from harness.export import DEFAULT_OPSET, EXPORTERS, DEFAULT_EXPORTER
    from harness.runtime import select_providers
    from harness.train import device_info, pick_device, versions

    return {
        "profile": profile.to_dict(), "variants": list(variants), "seeds": list(seeds),
        "data_root": str(Path(data_root).resolve()), "weights_file": str(weights_file) if weights_file else None,
        "data": data or {},
        "thresholds": thresholds.to_dict(), "thresholds_notes": list(notes), "exporter": {"default": DEFAULT_EXPORTER, "available": list(EXPORTERS),
                                                          "opset": DEFAULT_OPSET},
        "onnxruntime_providers": select_providers("auto"), "device": device_info(pick_device(profile.device)),
        "versions": versions(), "argv": sys.argv,
    }


def _current(vdir: Path, name: str, model_key: str, want_model: str | None, test_data: dict | None) -> bool:
    """<name>.json exists, was made from the model file export.json vouches for, and from the same test images."""
    try:
        rec = artifacts.read_json(vdir / name)
    except (FileNotFoundError, ValueError):
        return False
    if not isinstance(rec, dict):
        return False
    made = rec.get("inputs") or {}
    return made.get(model_key) == want_model and want_model is not None and made.get("test_data") == test_data


def fit_profile(profile: Profile, thresholds: Thresholds, data_root: Path) -> tuple[Profile, Thresholds, list[str]]:
    """A profile that names no test sets gets the dataset's (discovered), and its thresholds are fitted to them:
    rules for test sets this dataset does not have are set aside, with a note saying so (run.json, the report)."""
    if profile.test_sets:
        return profile, thresholds, []
    from harness.config import with_test_sets
    from harness.thresholds import fit_to_run

    profile = with_test_sets(profile, data_root)
    thresholds, notes = fit_to_run(thresholds, profile.test_sets)
    return profile, thresholds, notes


def preflight(profile: Profile, thresholds: Thresholds, data_root: Path, variants: Sequence[str],
              weights_file: Path | None):
    """Everything that can be known wrong before the first variant trains, checked before anything is written:
    variant names, thresholds against the run's test sets and matrix, device, ImageNet weights, the dataset.
    `profile` must name its test sets (see fit_profile). Returns (train Dataset, {split: test Dataset})."""
    from harness.backbones import check_weights_available
    from harness.data import load_test, load_train, working_short_side
    from harness.thresholds import check_applies
    from harness.train import pick_device

    for v in variants:
        split_variant(v)
    check_applies(thresholds, profile.test_sets, variants, thresholds.source or profile.source,
                  backbones=[profile.backbone])
    pick_device(profile.device)
    if any(split_variant(v)[0] == "imagenet" for v in variants):
        check_weights_available(profile.backbone, weights_file)
    size = working_short_side(profile.image_size)
    ds = load_train(data_root, max_short_side=size)
    tests = {split: load_test(data_root, split, ds.classes, max_short_side=size) for split in profile.test_sets}
    return ds, tests


def check_not_stale(run_dir: Path, profile: Profile, jobs: Sequence[tuple[str, int]], train_fp: str,
                    weights_file: Path | None, force: bool) -> None:
    """Refuse, before any training, a run directory holding models trained from other inputs than this run's.

    The matrix's own folders may be retrained with --force; another folder of the run dir (other variant or
    backbone) must have been trained with the same settings, or the report would mix protocols."""
    from harness import provenance
    from harness.train import stale_message, trained_state, variant_id

    mine = {variant_id(profile.backbone, v, s): (v, s) for v, s in jobs}
    problems = []
    for cfg in sorted(Path(run_dir).glob("*/config.json")):
        vdir = cfg.parent
        try:
            config = artifacts.read_json(cfg)
        except (FileNotFoundError, ValueError) as exc:
            problems.append(str(exc))
            continue
        if not isinstance(config, dict) or "variant" not in config:
            problems.append(f"{cfg}: not a harness config.json; remove {vdir}")
            continue
        if vdir.name in mine:
            variant, seed = mine[vdir.name]
            init = split_variant(variant)[0]
            inputs = provenance.train_inputs(profile, variant, seed, train_fp,
                                             provenance.weights_identity(profile.backbone, init, weights_file))
            state, why = trained_state(vdir, inputs)
            if state == "stale" and not force:
                problems.append(stale_message(vdir, why))
            continue
        recorded = config.get("inputs")
        if not isinstance(recorded, dict):
            problems.append(f"{vdir}: trained by an older harness (no recorded inputs); it cannot be shown beside "
                            f"this run's models. Remove it, or use another --out")
            continue
        ours = provenance.profile_train_fields(profile, str(recorded.get("init")))
        theirs = dict(recorded.get("profile") or {})
        changes = provenance.diff({k: v for k, v in theirs.items() if k != "backbone"},
                                  {k: v for k, v in ours.items() if k != "backbone"})
        if recorded.get("train_data") != train_fp:
            changes.append("train_data: another training set")
        if changes:
            problems.append(f"{vdir} (not in this matrix) was trained with other settings "
                            f"({provenance.describe(changes, 4)}); the report would mix protocols. Remove it, or use "
                            f"another --out")
    if problems:
        raise provenance.StaleRunError("; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))


def run_matrix(profile: Profile, thresholds: Thresholds, data_root: Path, run_dir: Path,
               variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
               weights_file: Path | None = None, force: bool = False, progress: bool | None = None,
               reports: Path = REPORTS) -> dict:
    """Run every (variant, seed) through all steps; completed, current steps are skipped, so a rerun resumes.

    Nothing is written (no run directory, no run.json, no `latest`) before every input has been validated.
    Returns the report (also written as report.json and report.html in run_dir).
    """
    from harness import provenance, runlock
    from harness.camcheck import cam_variant
    from harness.evaluate import evaluate_variant
    from harness.export import export_variant
    from harness.report.build import build_report, write_reports
    from harness.saliency.evidence import variant_blackbox
    from harness.train import train_variant

    variants = list(variants or profile.variants)
    seeds = list(seeds if seeds is not None else profile.seeds)
    profile, thresholds, notes = fit_profile(profile, thresholds, data_root)
    ds, tests = preflight(profile, thresholds, data_root, variants, weights_file)
    train_fp = provenance.dataset_fingerprint(ds)
    data = {"train": train_fp, "test": provenance.fingerprints(tests), "classes": list(ds.classes)}
    jobs = [(v, s) for s in seeds for v in variants]
    run_dir = Path(run_dir)
    with runlock.hold(run_dir):
        check_not_stale(run_dir, profile, jobs, train_fp, weights_file, force)
        artifacts.write_json(run_dir / "run.json",
                             protocol(profile, thresholds, data_root, variants, seeds, weights_file, data, notes))
        for note in notes:
            tqdm.write(f"note: {note}", file=sys.stderr)
        point_latest(run_dir, reports)
        show = sys.stderr.isatty() if progress is None else progress
        t0 = time.perf_counter()
        bar = tqdm(jobs, desc="matrix", unit="variant", disable=not show)
        for n, (variant, seed) in enumerate(bar, 1):
            bar.set_postfix_str(f"{variant} s{seed}")
            tqdm.write(f"== [{n}/{len(jobs)}] {variant} seed {seed} ({time.perf_counter() - t0:.0f}s elapsed)",
                       file=sys.stderr)
            vdir = train_variant(run_dir, profile, ds, data_root, variant, seed, weights_file, force, progress=show,
                                 train_fingerprint=train_fp)
            record = export_variant(vdir, force=force, data_root=data_root)
            test_data = (record.get("inputs") or {}).get("test_data")
            if force or not _current(vdir, "metrics.json", "onnx_sha256", record.get("sha256"), test_data):
                evaluate_variant(vdir, data_root=data_root)
            cam_variant(vdir, force=force, data_root=data_root)  # redoes itself when stale
            for method in (profile.saliency.black_box if profile.saliency else ()):
                variant_blackbox(vdir, method, force=force, data_root=data_root)
        report = build_report(run_dir, thresholds)
        write_reports(run_dir, report)
    return report
