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


def default_run_dir(profile: Profile, reports: Path = Path("reports")) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return reports / "runs" / f"{stamp}-{profile.name}-{profile.backbone}"


def point_latest(run_dir: Path) -> Path | None:
    """reports/latest -> runs/<id>, replaced atomically; only for run dirs laid out as <reports>/runs/<id>."""
    run_dir = Path(run_dir)
    if run_dir.parent.name != "runs":
        return None
    latest = run_dir.parent.parent / "latest"
    tmp = latest.with_name(f".latest.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path("runs") / run_dir.name)
    os.replace(tmp, latest)
    return latest


def protocol(profile: Profile, thresholds: Thresholds, data_root: Path, variants: Sequence[str], seeds: Sequence[int],
             weights_file: Path | None) -> dict:
    from harness.export import DEFAULT_OPSET, EXPORTERS, DEFAULT_EXPORTER
    from harness.runtime import select_providers
    from harness.train import device_info, pick_device, versions

    return {
        "profile": profile.to_dict(), "variants": list(variants), "seeds": list(seeds),
        "data_root": str(Path(data_root).resolve()), "weights_file": str(weights_file) if weights_file else None,
        "thresholds": thresholds.to_dict(), "exporter": {"default": DEFAULT_EXPORTER, "available": list(EXPORTERS),
                                                          "opset": DEFAULT_OPSET},
        "onnxruntime_providers": select_providers("auto"), "device": device_info(pick_device(profile.device)),
        "versions": versions(), "argv": sys.argv,
    }


def _metrics_current(vdir: Path) -> bool:
    """metrics.json exists and was computed from the model.onnx that export.json vouches for."""
    try:
        metrics = artifacts.read_json(vdir / "metrics.json")
        export = artifacts.read_json(vdir / "export.json")
    except (FileNotFoundError, ValueError):
        return False
    return metrics.get("model", {}).get("sha256") == export.get("sha256")


def run_matrix(profile: Profile, thresholds: Thresholds, data_root: Path, run_dir: Path,
               variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
               weights_file: Path | None = None, force: bool = False, progress: bool | None = None) -> dict:
    """Run every (variant, seed) through all steps; completed steps are skipped, so a rerun resumes.

    Returns the report (also written as report.json and report.html in run_dir).
    """
    from harness.camcheck import cam_variant
    from harness.data import load_test, load_train
    from harness.evaluate import evaluate_variant
    from harness.export import export_variant
    from harness.report.build import build_report, write_reports
    from harness.train import train_variant

    variants = list(variants or profile.variants)
    seeds = list(seeds if seeds is not None else profile.seeds)
    for v in variants:
        split_variant(v)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ds = load_train(data_root)
    for split in profile.test_sets:  # fail before hours of training, not after
        load_test(data_root, split, ds.classes)
    artifacts.write_json(run_dir / "run.json", protocol(profile, thresholds, data_root, variants, seeds, weights_file))
    point_latest(run_dir)
    jobs = [(v, s) for s in seeds for v in variants]
    show = sys.stderr.isatty() if progress is None else progress
    t0 = time.perf_counter()
    bar = tqdm(jobs, desc="matrix", unit="variant", disable=not show)
    for n, (variant, seed) in enumerate(bar, 1):
        bar.set_postfix_str(f"{variant} s{seed}")
        print(f"== [{n}/{len(jobs)}] {variant} seed {seed} ({time.perf_counter() - t0:.0f}s elapsed)", file=sys.stderr, flush=True)
        vdir = train_variant(run_dir, profile, ds, data_root, variant, seed, weights_file, force, progress=show)
        export_variant(vdir, force=force)
        if force or not _metrics_current(vdir):
            evaluate_variant(vdir)
        cam_variant(vdir, force=force)
    report = build_report(run_dir, thresholds)
    write_reports(run_dir, report)
    return report
