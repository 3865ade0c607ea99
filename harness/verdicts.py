"""Thresholds -> verdicts: each check reads a variant's evidence files and states criterion, threshold, value, status."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from harness.thresholds import Thresholds

PASS, FAIL, ERROR, SKIP = "PASS", "FAIL", "ERROR", "SKIP"


@dataclass(frozen=True)
class Verdict:
    criterion: str  # e.g. "accuracy"; pytest's test name is "test_<criterion>"
    variant: str  # e.g. "imagenet-all" (over all seeds)
    subject: str  # test set, or "" when the criterion is not per test set
    comparison: str  # ">=", ">" or "<="
    threshold: float | None
    value: float | None  # the aggregate (worst seed by default) that was compared
    status: str  # PASS / FAIL / ERROR / SKIP
    gated: bool  # False: an informational ablation, reported but never failing the gate
    evidence: tuple[str, ...]  # files the value was read from, relative to the run directory
    detail: str = ""
    per_seed: dict[str, float | None] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.variant}-{self.subject}" if self.subject else self.variant

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"id": self.id}


@dataclass(frozen=True)
class SeedRun:
    """The evidence of one trained (variant, seed): the parsed JSON files of its folder (None where missing)."""

    folder: Path
    seed: int
    metrics: dict[str, Any] | None
    cam: dict[str, Any] | None
    export: dict[str, Any] | None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def collect(run_dir: Path) -> dict[str, list[SeedRun]]:
    """Group the run's variant folders by variant name (config.json), in a stable order."""
    groups: dict[str, list[SeedRun]] = {}
    for cfg in sorted(Path(run_dir).glob("*/config.json")):
        config = _read(cfg)
        if not config or "variant" not in config:
            continue
        folder = cfg.parent
        groups.setdefault(config["variant"], []).append(SeedRun(
            folder, int(config.get("seed", 0)), _read(folder / "metrics.json"), _read(folder / "cam.json"),
            _read(folder / "export.json")))
    return groups


# --- checks: each returns (value or None, evidence file name, note) for one seed run -----------------------------

Reading = tuple[float | None, str, str]


def _split(run: SeedRun, split: str) -> dict[str, Any] | None:
    return (run.metrics or {}).get("test_sets", {}).get(split)


def read_soft(run: SeedRun, split: str) -> Reading:
    s = _split(run, split)
    return (s["soft"]["value"] if s else None), "metrics.json", "" if s else f"no {split} in metrics.json"


def read_strict(run: SeedRun, split: str) -> Reading:
    s = _split(run, split)
    return (s["strict"]["value"] if s else None), "metrics.json", "" if s else f"no {split} in metrics.json"


def read_soft_minus_constant(run: SeedRun, split: str) -> Reading:
    s = _split(run, split)
    if not s:
        return None, "metrics.json", f"no {split} in metrics.json"
    return s["soft"]["value"] - s["baselines"]["constant_soft"]["value"], "metrics.json", ""


def read_strict_minus_constant(run: SeedRun, split: str) -> Reading:
    s = _split(run, split)
    if not s:
        return None, "metrics.json", f"no {split} in metrics.json"
    return s["strict"]["value"] - s["baselines"]["constant_strict"]["value"], "metrics.json", ""


def read_wilson_lower(run: SeedRun, split: str) -> Reading:
    s = _split(run, split)
    return (s["soft"]["wilson"][0] if s else None), "metrics.json", ""


def _cam(run: SeedRun, split: str, key: str) -> Reading:
    summary = (run.cam or {}).get("summary", {}).get(split)
    if summary is None:
        return None, "cam.json", f"no {split} in cam.json"
    if not summary.get("has_regions", True):
        return None, "cam.json", "skipped: the test set has no region annotations"
    return summary.get(key), "cam.json", ""


def read_cam_energy(run: SeedRun, split: str) -> Reading:
    return _cam(run, split, "energy_share_mean")


def read_cam_pointing(run: SeedRun, split: str) -> Reading:
    return _cam(run, split, "pointing_hit_rate")


def read_parity(run: SeedRun, _: str) -> Reading:
    cpu = ((run.export or {}).get("parity") or {}).get("cpu") or {}
    if "max_abs" not in cpu:
        return None, "export.json", "no CPU parity record in export.json"
    if cpu.get("test_sets") and any(t.get("top1_mismatches") for t in cpu["test_sets"].values()):
        return float("inf"), "export.json", "top-1 differs between PyTorch and onnxruntime"
    return cpu["max_abs"], "export.json", ""


def read_latency(run: SeedRun, batch: str) -> Reading:
    by = ((run.metrics or {}).get("latency") or {}).get("by_provider") or {}
    cpu = by.get("CPUExecutionProvider", {}).get(batch)
    if cpu is None:
        return None, "metrics.json", f"no CPU latency at batch {batch}"
    return cpu["median_ms"], "metrics.json", ""


def _aggregate(values: Sequence[float], lower_is_better: bool, how: str) -> float:
    if how == "mean":
        return statistics.fmean(values)
    return max(values) if lower_is_better else min(values)


def _judge(criterion: str, variant: str, subject: str, runs: Sequence[SeedRun], reader: Callable[[SeedRun, str], Reading],
           arg: str, comparison: str, threshold: float | None, gated: bool, how: str, run_dir: Path,
           shown_threshold: float | None = None, detail: str = "") -> Verdict:
    if not runs:
        return Verdict(criterion, variant, subject, comparison, threshold if shown_threshold is None else shown_threshold,
                       None, ERROR, gated, (), "no trained seed of this variant in the run directory")
    readings = {f"s{r.seed}": reader(r, arg) for r in runs}
    evidence = tuple(sorted({str((r.folder / readings[f's{r.seed}'][1]).relative_to(run_dir)) for r in runs}))
    per_seed = {k: v[0] for k, v in readings.items()}
    shown = threshold if shown_threshold is None else shown_threshold
    notes = sorted({v[2] for v in readings.values() if v[2]})
    if threshold is None:
        return Verdict(criterion, variant, subject, comparison, None, None, SKIP, gated, evidence, "no threshold set", per_seed)
    if any(v is None for v in per_seed.values()):
        status = SKIP if notes and all(n.startswith("skipped") for n in notes) else ERROR
        return Verdict(criterion, variant, subject, comparison, shown, None, status, gated, evidence,
                       "; ".join(notes) or "evidence missing: rerun the step that writes it", per_seed)
    value = _aggregate(list(per_seed.values()), comparison == "<=", how)
    ok = {">=": value >= threshold - 1e-12, ">": value > threshold + 1e-12, "<=": value <= threshold + 1e-12}[comparison]
    agg = f"{how} of {len(runs)} seed(s)" if len(runs) > 1 else "1 seed"
    return Verdict(criterion, variant, subject, comparison, shown, value, PASS if ok else FAIL, gated, evidence,
                   "; ".join(filter(None, [detail, agg])), per_seed)


def judge(run_dir: Path, thresholds: Thresholds, test_sets: Iterable[str],
          variants: Iterable[str] = ()) -> list[Verdict]:
    """Every criterion for every variant found in the run, every gated variant and every variant named.

    A gated (or named) variant with no trained seed in the run yields ERROR verdicts: it can never pass by absence.
    Gated variants come first.
    """
    run_dir = Path(run_dir)
    groups = collect(run_dir) if run_dir.is_dir() else {}
    how = thresholds.seed_aggregate
    test_sets = list(test_sets)
    order = sorted(set(groups) | set(thresholds.gated) | set(variants), key=lambda v: (v not in thresholds.gated, v))
    out: list[Verdict] = []
    for variant in order:
        runs, gated = groups.get(variant, []), variant in thresholds.gated
        for split in test_sets:
            rule = thresholds.accuracy.get(split)
            if rule is None:
                continue
            const = _split(runs[0], split) if runs else None
            const_soft = const["baselines"]["constant_soft"]["value"] if const else None
            soft_thr = rule.soft_min
            if rule.soft_margin is not None and const_soft is not None:
                soft_thr = max(soft_thr, const_soft + rule.soft_margin)
            out.append(_judge("accuracy", variant, split, runs, read_soft, split, ">=", soft_thr, gated, how, run_dir,
                              detail=f"soft accuracy; best constant answer scores {const_soft}" if const else ""))
            out.append(_judge("soft_above_constant", variant, split, runs, read_soft_minus_constant, split, ">", 0.0,
                              gated, how, run_dir, detail="soft accuracy minus the best constant answer's"))
            if rule.strict_above_constant:
                out.append(_judge("strict_above_constant", variant, split, runs, read_strict_minus_constant, split, ">",
                                  0.0, gated, how, run_dir, detail="strict accuracy minus the best constant answer's"))
            if rule.strict_min is not None:
                out.append(_judge("strict_accuracy", variant, split, runs, read_strict, split, ">=", rule.strict_min,
                                  gated, how, run_dir, detail="strict (primary-label) accuracy"))
            if rule.wilson_lower_min is not None:
                out.append(_judge("wilson_lower", variant, split, runs, read_wilson_lower, split, ">=",
                                  rule.wilson_lower_min, gated, how, run_dir, detail="Wilson 95% lower bound of soft accuracy"))
        cam = thresholds.cam
        out.append(_judge("cam_energy", variant, cam.split, runs, read_cam_energy, cam.split, ">=", cam.energy_share_min,
                          gated, how, run_dir, detail="mean share of Grad-CAM energy inside the labelled covers"))
        out.append(_judge("cam_pointing", variant, cam.split, runs, read_cam_pointing, cam.split, ">=",
                          cam.pointing_rate_min, gated, how, run_dir, detail="pointing-game hit rate (15 px)"))
        out.append(_judge("onnx_parity", variant, "", runs, read_parity, "", "<=", thresholds.parity_atol, gated, "worst",
                          run_dir, detail=f"max |PyTorch - onnxruntime CPU| logit difference (rtol {thresholds.parity_rtol})"))
        out.append(_judge("latency", variant, f"batch{thresholds.latency_batch}", runs, read_latency,
                          str(thresholds.latency_batch), "<=", thresholds.latency_max_ms, gated, "worst", run_dir,
                          detail="median onnxruntime CPU latency (ms)"))
    return out


def overall(verdicts: Sequence[Verdict]) -> str:
    gated = [v for v in verdicts if v.gated]
    if not gated:
        return "UNGATED"  # e.g. the smoke profile: everything is reported, nothing is gated
    if any(v.status == ERROR for v in gated):
        return ERROR
    return FAIL if any(v.status == FAIL for v in gated) else PASS
