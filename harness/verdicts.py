"""Thresholds -> verdicts: each check reads a variant's evidence files and states criterion, threshold, value, status."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from harness.thresholds import Thresholds, is_gated

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
    backbone: str = ""  # identity of a trained model is (backbone, variant, seed)

    @property
    def model(self) -> str:
        return f"{self.backbone}-{self.variant}" if self.backbone else self.variant

    @property
    def id(self) -> str:
        return f"{self.model}-{self.subject}" if self.subject else self.model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"id": self.id, "model": self.model}


@dataclass(frozen=True)
class SeedRun:
    """The evidence of one trained (backbone, variant, seed): its parsed JSON files (None where missing or unusable).

    `problems` maps an evidence file name to why it cannot be used (invalid JSON, made from another model, stale).
    """

    folder: Path
    seed: int
    metrics: dict[str, Any] | None
    cam: dict[str, Any] | None
    export: dict[str, Any] | None
    backbone: str = ""
    variant: str = ""
    problems: dict[str, str] = field(default_factory=dict)


def _read(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(parsed object, "") or (None, why): a missing file and one that does not parse are told apart."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except OSError as exc:
        return None, f"{path.name}: unreadable ({exc.strerror or exc})"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"{path.name}: invalid JSON ({exc}); rerun the step that writes it"
    if not isinstance(obj, dict):
        return None, f"{path.name}: invalid evidence (a JSON {type(obj).__name__}, not an object)"
    return obj, ""


def model_key(backbone: str, variant: str) -> str:
    return f"{backbone}-{variant}" if backbone else variant


def _consistency(folder: Path, config: dict, history: dict | None, export: dict | None, metrics: dict | None,
                 cam: dict | None, run_profile: dict | None) -> dict[str, str]:
    """Why some evidence of this folder does not describe its model (empty when all agree)."""
    from harness.provenance import diff, describe, profile_train_fields

    problems: dict[str, str] = {}
    inputs = config.get("inputs")
    if run_profile is not None and isinstance(inputs, dict) and isinstance(inputs.get("profile"), dict):
        here = {k: v for k, v in inputs["profile"].items() if k != "backbone"}
        there = {k: v for k, v in profile_train_fields(run_profile, str(inputs.get("init"))).items() if k != "backbone"}
        changes = diff(here, there)
        if changes:
            stale = (f"stale: trained with other settings than run.json's protocol ({describe(changes, 3)}); "
                     f"retrain it (harness run --force) or remove {folder.name}/")
            return {"metrics.json": stale, "cam.json": stale, "export.json": stale}
    model_sha = (history or {}).get("model_sha256")
    export_made = ((export or {}).get("inputs") or {}).get("model_sha256")
    if model_sha and export_made and export_made != model_sha:
        problems["export.json"] = "export.json: made from another model.pt than the current one; rerun harness export"
    onnx_sha = ((metrics or {}).get("model") or {}).get("sha256")
    if export is not None and metrics is not None and onnx_sha != export.get("sha256"):
        problems["metrics.json"] = "metrics.json: computed from another model.onnx than export.json's; rerun harness evaluate"
    cam_made = ((cam or {}).get("inputs") or {}).get("model_sha256")
    if model_sha and cam_made and cam_made != model_sha:
        problems["cam.json"] = "cam.json: computed from another model.pt than the current one; rerun harness cam"
    return problems


def collect(run_dir: Path, run_profile: dict | None = None) -> dict[str, list[SeedRun]]:
    """Group the run's model folders by (backbone, variant) -> 'backbone-variant' key, in a stable order.

    With `run_profile` (run.json's), folders trained with other training settings are marked stale.
    """
    groups: dict[str, list[SeedRun]] = {}
    for cfg in sorted(Path(run_dir).glob("*/config.json")):
        config, _ = _read(cfg)
        if not config or "variant" not in config:
            continue
        folder = cfg.parent
        backbone, variant = str(config.get("backbone") or ""), str(config["variant"])
        files = {name: _read(folder / name) for name in ("metrics.json", "cam.json", "export.json", "history.json")}
        problems = {k: why for k, (_, why) in files.items() if why and k != "history.json"}
        metrics, cam, export = (files[k][0] for k in ("metrics.json", "cam.json", "export.json"))
        problems.update({k: v for k, v in _consistency(folder, config, files["history.json"][0], export, metrics, cam,
                                                         run_profile).items() if k not in problems})
        groups.setdefault(model_key(backbone, variant), []).append(SeedRun(
            folder, int(config.get("seed", 0)),
            None if "metrics.json" in problems else metrics, None if "cam.json" in problems else cam,
            None if "export.json" in problems else export, backbone, variant, problems))
    return groups


# --- checks: each returns (value or None, evidence file name, note) for one seed run -----------------------------

Reading = tuple[float | None, str, str]


def _split(run: SeedRun, split: str) -> dict[str, Any] | None:
    return (run.metrics or {}).get("test_sets", {}).get(split)


def _absent(run: SeedRun, file: str, what: str) -> str:
    """Why a reading has no value: the file's problem (invalid JSON, stale...) when it has one, else what is missing."""
    return run.problems.get(file) or (f"{file} missing" if getattr(run, file.split(".")[0]) is None else what)


def _metric(run: SeedRun, split: str, value: Callable[[dict[str, Any]], float]) -> Reading:
    s = _split(run, split)
    if not s:
        return None, "metrics.json", _absent(run, "metrics.json", f"no {split} in metrics.json")
    try:
        return float(value(s)), "metrics.json", ""
    except (KeyError, TypeError, IndexError, ValueError):
        return None, "metrics.json", f"metrics.json: malformed entry for {split}; rerun harness evaluate"


def read_soft(run: SeedRun, split: str) -> Reading:
    return _metric(run, split, lambda s: s["soft"]["value"])


def read_strict(run: SeedRun, split: str) -> Reading:
    return _metric(run, split, lambda s: s["strict"]["value"])


def read_soft_minus_constant(run: SeedRun, split: str) -> Reading:
    return _metric(run, split, lambda s: s["soft"]["value"] - s["baselines"]["constant_soft"]["value"])


def read_strict_minus_constant(run: SeedRun, split: str) -> Reading:
    return _metric(run, split, lambda s: s["strict"]["value"] - s["baselines"]["constant_strict"]["value"])


def read_wilson_lower(run: SeedRun, split: str) -> Reading:
    return _metric(run, split, lambda s: s["soft"]["wilson"][0])


def _cam(run: SeedRun, split: str, key: str) -> Reading:
    summary = (run.cam or {}).get("summary", {}).get(split)
    if summary is None:
        return None, "cam.json", _absent(run, "cam.json", f"no {split} in cam.json")
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
        return None, "export.json", _absent(run, "export.json", "no CPU parity record in export.json")
    if cpu.get("test_sets") and any(t.get("top1_mismatches") for t in cpu["test_sets"].values()):
        return float("inf"), "export.json", "top-1 differs between PyTorch and onnxruntime"
    return cpu["max_abs"], "export.json", ""


def read_latency(run: SeedRun, batch: str) -> Reading:
    by = ((run.metrics or {}).get("latency") or {}).get("by_provider") or {}
    cpu = by.get("CPUExecutionProvider", {}).get(batch)
    if cpu is None:
        return None, "metrics.json", _absent(run, "metrics.json", f"no CPU latency at batch {batch}")
    return cpu["median_ms"], "metrics.json", ""


def _aggregate(values: Sequence[float], lower_is_better: bool, how: str) -> float:
    if how == "mean":
        return statistics.fmean(values)
    return max(values) if lower_is_better else min(values)


def _judge(criterion: str, variant: str, subject: str, runs: Sequence[SeedRun], reader: Callable[[SeedRun, str], Reading],
           arg: str, comparison: str, threshold: float | None, gated: bool, how: str, run_dir: Path,
           shown_threshold: float | None = None, detail: str = "", backbone: str = "") -> Verdict:
    shown = threshold if shown_threshold is None else shown_threshold
    if not runs:
        return Verdict(criterion, variant, subject, comparison, shown, None, ERROR, gated, (),
                       "no trained seed of this variant in the run directory", backbone=backbone)
    readings = {f"s{r.seed}": reader(r, arg) for r in runs}
    evidence = tuple(sorted({str((r.folder / readings[f's{r.seed}'][1]).relative_to(run_dir)) for r in runs}))
    per_seed = {k: v[0] for k, v in readings.items()}
    notes = sorted({v[2] for v in readings.values() if v[2]})
    if threshold is None:
        return Verdict(criterion, variant, subject, comparison, None, None, SKIP, gated, evidence, "no threshold set",
                       per_seed, backbone)
    if any(v is None for v in per_seed.values()):
        status = SKIP if notes and all(n.startswith("skipped") for n in notes) else ERROR
        return Verdict(criterion, variant, subject, comparison, shown, None, status, gated, evidence,
                       "; ".join(notes) or "evidence missing: rerun the step that writes it", per_seed, backbone)
    value = _aggregate(list(per_seed.values()), comparison == "<=", how)
    ok = {">=": value >= threshold - 1e-12, ">": value > threshold + 1e-12, "<=": value <= threshold + 1e-12}[comparison]
    agg = f"{how} of {len(runs)} seed(s)" if len(runs) > 1 else "1 seed"
    return Verdict(criterion, variant, subject, comparison, shown, value, PASS if ok else FAIL, gated, evidence,
                   "; ".join(filter(None, [detail, agg])), per_seed, backbone)


ACCURACY_CRITERIA = ("accuracy", "soft_above_constant", "strict_above_constant", "strict_accuracy", "wilson_lower")


def _plain_variant(entry: str, backbones: Sequence[str]) -> tuple[str, str]:
    """'vgg16-imagenet-all' -> ('vgg16', 'imagenet-all'); 'imagenet-all' -> ('', 'imagenet-all')."""
    for b in sorted(backbones, key=len, reverse=True):
        if b and entry.startswith(b + "-"):
            return b, entry[len(b) + 1:]
    return "", entry


def _accuracy_verdicts(variant: str, backbone: str, split: str, runs: Sequence[SeedRun], thresholds: Thresholds,
                       gated: bool, how: str, run_dir: Path) -> list[Verdict]:
    """The accuracy criteria of one test set. A test set without a named rule still gets the chance checks
    (soft and strict accuracy strictly above the best constant answer): no test set of a run goes unjudged."""
    from harness.thresholds import AccuracyRule

    named = thresholds.accuracy.get(split)
    rule = named or AccuracyRule()
    const = next((_split(r, split) for r in runs if _split(r, split)), None)
    const_soft = ((const or {}).get("baselines") or {}).get("constant_soft", {}).get("value") if const else None
    kw = dict(gated=gated, how=how, run_dir=run_dir, backbone=backbone)
    out = []
    if named is not None:
        soft_thr = rule.soft_min
        if rule.soft_margin is not None and const_soft is not None:
            soft_thr = max(soft_thr, const_soft + rule.soft_margin)
        out.append(_judge("accuracy", variant, split, runs, read_soft, split, ">=", soft_thr,
                          detail=f"soft accuracy; best constant answer scores {const_soft}" if const else "", **kw))
    default = "" if named else " (no named rule for this test set: the chance checks apply)"
    out.append(_judge("soft_above_constant", variant, split, runs, read_soft_minus_constant, split, ">", 0.0,
                      detail="soft accuracy minus the best constant answer's" + default, **kw))
    if rule.strict_above_constant:
        out.append(_judge("strict_above_constant", variant, split, runs, read_strict_minus_constant, split, ">",
                          0.0, detail="strict accuracy minus the best constant answer's" + default, **kw))
    if rule.strict_min is not None:
        out.append(_judge("strict_accuracy", variant, split, runs, read_strict, split, ">=", rule.strict_min,
                          detail="strict (primary-label) accuracy", **kw))
    if rule.wilson_lower_min is not None:
        out.append(_judge("wilson_lower", variant, split, runs, read_wilson_lower, split, ">=",
                          rule.wilson_lower_min, detail="Wilson 95% lower bound of soft accuracy", **kw))
    return out


def _coverage(variant: str, backbone: str, test_sets: Sequence[str], verdicts: Sequence[Verdict], gated: bool,
              runs: Sequence[SeedRun], run_dir: Path) -> Verdict:
    """How many of the run's test sets an accuracy criterion actually judged (a value compared: PASS or FAIL).

    A variant that was judged on fewer test sets than the run has is never PASS: FAIL is impossible to argue with
    here, so it is an ERROR (the gate had nothing, or not everything, to judge)."""
    judged = {s: [v.criterion for v in verdicts if v.subject == s and v.criterion in ACCURACY_CRITERIA
                  and v.status in (PASS, FAIL)] for s in test_sets}
    done = [s for s, c in judged.items() if c]
    missing = [s for s, c in judged.items() if not c]
    text = "; ".join(f"{s} by {', '.join(c)}" for s, c in judged.items() if c) or "nothing"
    detail = f"test sets judged by an accuracy criterion: {text}"
    if missing:
        detail += f"; NOT judged: {', '.join(missing)} (evidence missing)"
    if not test_sets:
        detail = "the run has no test sets: nothing to judge"
    status = PASS if test_sets and not missing else ERROR
    evidence = tuple(sorted({str((r.folder / "metrics.json").relative_to(run_dir)) for r in runs}))
    return Verdict("test_sets_judged", variant, "", ">=", float(len(test_sets)), float(len(done)), status, gated,
                   evidence, detail, {}, backbone)


def judge(run_dir: Path, thresholds: Thresholds, test_sets: Iterable[str], variants: Iterable[str] = (),
          backbone: str = "", run_profile: dict | None = None) -> list[Verdict]:
    """Every criterion for every model (backbone, variant) found in the run, every gated variant and every variant
    named (those two of `backbone`, the run's, when no folder has them).

    A gated (or named) variant with no trained seed in the run yields ERROR verdicts: it can never pass by absence.
    Every test set of the run is judged (named rule or the chance checks), and each variant gets a
    `test_sets_judged` verdict counting them. Gated variants come first.
    """
    run_dir = Path(run_dir)
    groups = collect(run_dir, run_profile) if run_dir.is_dir() else {}
    how = thresholds.seed_aggregate
    test_sets = list(test_sets)
    models: dict[str, tuple[str, str]] = {}
    for key, runs in groups.items():
        models[key] = (runs[0].backbone, runs[0].variant)
    present = {v for _, v in models.values()}
    known_backbones = {b for b, _ in models.values()} | ({backbone} if backbone else set())
    for entry in list(thresholds.gated) + list(variants):
        b, v = _plain_variant(entry, sorted(known_backbones))
        if (b and model_key(b, v) not in models) or (not b and v not in present):
            models.setdefault(model_key(b or backbone, v), (b or backbone, v))
    order = sorted(models, key=lambda k: (not is_gated(thresholds, *models[k]), models[k][1], models[k][0]))
    out: list[Verdict] = []
    for key in order:
        b, variant = models[key]
        runs, gated = groups.get(key, []), is_gated(thresholds, b, variant)
        kw = dict(gated=gated, how=how, run_dir=run_dir, backbone=b)
        mine: list[Verdict] = []
        for split in test_sets:
            mine += _accuracy_verdicts(variant, b, split, runs, thresholds, gated, how, run_dir)
        mine.append(_coverage(variant, b, test_sets, mine, gated, runs, run_dir))
        cam = thresholds.cam
        mine.append(_judge("cam_energy", variant, cam.split, runs, read_cam_energy, cam.split, ">=",
                           cam.energy_share_min, detail="mean share of Grad-CAM energy inside the labelled covers", **kw))
        mine.append(_judge("cam_pointing", variant, cam.split, runs, read_cam_pointing, cam.split, ">=",
                           cam.pointing_rate_min, detail="pointing-game hit rate (15 px)", **kw))
        mine.append(_judge("onnx_parity", variant, "", runs, read_parity, "", "<=", thresholds.parity_atol,
                           detail=f"max |PyTorch - onnxruntime CPU| logit difference (rtol {thresholds.parity_rtol})",
                           **(kw | {"how": "worst"})))
        mine.append(_judge("latency", variant, f"batch{thresholds.latency_batch}", runs, read_latency,
                           str(thresholds.latency_batch), "<=", thresholds.latency_max_ms,
                           detail="median onnxruntime CPU latency (ms)", **(kw | {"how": "worst"})))
        out += mine
    return out


def judged_table(verdicts: Sequence[Verdict]) -> dict[str, dict[str, list[str]]]:
    """{model: {test set: [criteria that judged it]}}: which test sets were judged by what (for the report)."""
    table: dict[str, dict[str, list[str]]] = {}
    for v in verdicts:
        if v.criterion in ACCURACY_CRITERIA or v.criterion in ("cam_energy", "cam_pointing"):
            if v.subject and v.status in (PASS, FAIL):
                table.setdefault(v.model, {}).setdefault(v.subject, []).append(v.criterion)
    return table


def overall(verdicts: Sequence[Verdict]) -> str:
    gated = [v for v in verdicts if v.gated]
    if not gated:
        return "UNGATED"  # e.g. the smoke profile: everything is reported, nothing is gated
    if any(v.status == ERROR for v in gated):
        return ERROR
    return FAIL if any(v.status == FAIL for v in gated) else PASS
