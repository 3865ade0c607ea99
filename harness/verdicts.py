"""Thresholds -> verdicts: each check reads a variant's evidence files and states criterion, threshold, value, status."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.thresholds import EVERY_MODEL, SALIENCY_EVIDENCE, AccuracyRule, CamRule, Thresholds, is_gated

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
    chance: float | None = None  # the chance level the value stands beside (constant answer, uniform map)

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
    saliency: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # "occlusion" -> occlusion.json
    kind: str = "trained"  # "trained" by harness run, or "check": an ONNX model judged by harness check


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


def _consistency(
    folder: Path,
    config: dict,
    history: dict | None,
    export: dict | None,
    metrics: dict | None,
    cam: dict | None,
    run_profile: dict | None,
    others: dict[str, dict | None] | None = None,
) -> dict[str, str]:
    """Why some evidence of this folder does not describe its model (empty when all agree)."""
    from harness.provenance import describe, diff, profile_train_fields

    problems: dict[str, str] = {}
    inputs = config.get("inputs")
    if run_profile is not None and isinstance(inputs, dict) and isinstance(inputs.get("profile"), dict):
        here = {k: v for k, v in inputs["profile"].items() if k != "backbone"}
        there = {k: v for k, v in profile_train_fields(run_profile, str(inputs.get("init"))).items() if k != "backbone"}
        changes = diff(here, there)
        if changes:
            stale = (
                f"stale: trained with other settings than run.json's protocol ({describe(changes, 3)}); "
                f"retrain it (harness run --force) or remove {folder.name}/"
            )
            return {
                "metrics.json": stale,
                "cam.json": stale,
                "export.json": stale,
                **{f"{p}.json": stale for p in BLACK_BOX},
            }
    model_sha = (history or {}).get("model_sha256")
    export_made = ((export or {}).get("inputs") or {}).get("model_sha256")
    if model_sha and export_made and export_made != model_sha:
        problems["export.json"] = "export.json: made from another model.pt than the current one; rerun harness export"
    onnx_sha = ((metrics or {}).get("model") or {}).get("sha256")
    if export is not None and metrics is not None and onnx_sha != export.get("sha256"):
        problems["metrics.json"] = (
            "metrics.json: computed from another model.onnx than export.json's; rerun harness evaluate"
        )
    cam_made = ((cam or {}).get("inputs") or {}).get("model_sha256")
    if model_sha and cam_made and cam_made != model_sha:
        problems["cam.json"] = "cam.json: computed from another model.pt than the current one; rerun harness cam"
    onnx_now = (export or {}).get("sha256") or ((metrics or {}).get("model") or {}).get("sha256")
    for prefix, ev in (others or {}).items():
        made = ((ev or {}).get("inputs") or {}).get("onnx_sha256")
        if onnx_now and made and made != onnx_now:
            problems[f"{prefix}.json"] = (
                f"{prefix}.json: computed from another model.onnx than the current one; "
                f"rerun the run (its saliency step redoes itself)"
            )
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
        names = ("metrics.json", "cam.json", "export.json", "history.json", *(f"{p}.json" for p in BLACK_BOX))
        files = {name: _read(folder / name) for name in names}
        problems = {k: why for k, (_, why) in files.items() if why and k != "history.json"}
        metrics, cam, export = (files[k][0] for k in ("metrics.json", "cam.json", "export.json"))
        others = {p: files[f"{p}.json"][0] for p in BLACK_BOX}
        problems.update(
            {
                k: v
                for k, v in _consistency(
                    folder, config, files["history.json"][0], export, metrics, cam, run_profile, others
                ).items()
                if k not in problems
            }
        )
        groups.setdefault(model_key(backbone, variant), []).append(
            SeedRun(
                folder,
                int(config.get("seed", 0)),
                None if "metrics.json" in problems else metrics,
                None if "cam.json" in problems else cam,
                None if "export.json" in problems else export,
                backbone,
                variant,
                problems,
                {p: None if f"{p}.json" in problems else ev for p, ev in others.items()},
                str(config.get("kind") or "trained"),
            )
        )
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


BLACK_BOX = tuple(p for m, p in SALIENCY_EVIDENCE.items() if m != "gradcam")  # evidence files <prefix>.json


def _evidence(run: SeedRun, prefix: str) -> dict[str, Any] | None:
    return run.cam if prefix == "cam" else run.saliency.get(prefix)


def _evidence_absent(run: SeedRun, prefix: str, what: str) -> str:
    file = f"{prefix}.json"
    if run.problems.get(file):
        return run.problems[file]
    if prefix == "cam" and run.kind == "check":
        return "skipped: Grad-CAM needs the PyTorch model; a model judged by harness check has only its ONNX file"
    return f"{file} missing" if _evidence(run, prefix) is None else what


def sanity_problem(ev: dict[str, Any], rule: CamRule, prefix: str) -> str:
    """Why the maps of this evidence cannot be trusted (Adebayo et al. 2018), or ""."""
    if rule.sanity_max is None:
        return ""
    sanity = ev.get("sanity")
    if not isinstance(sanity, dict):
        return f"{prefix}.json has no sanity check (maps of a randomised model); rerun its step"
    if sanity.get("impossible"):
        return f"the maps could not be sanity-checked ({sanity.get('skipped')}), so they cannot be trusted"
    rho = sanity.get("spearman_mean")
    if rho is None:
        return ""  # nothing was scored, so nothing was compared (the localization itself says skipped)
    if rho > rule.sanity_max + 1e-12:
        return (
            f"the maps do not depend on the model: mean Spearman {rho:.2f} between the trained model's maps and "
            f"those with its last layer randomised is above {rule.sanity_max} (Adebayo et al. 2018)"
        )
    return ""


def read_localization(run: SeedRun, arg: tuple[str, str, str, CamRule]) -> Reading:
    """(prefix, split, 'energy' | 'pointing', rule): mean energy share or pointing rate of one method on one split;
    None with the reason when there is nothing to read, it was skipped, or the maps failed their sanity check."""
    prefix, split, what, rule = arg
    file = f"{prefix}.json"
    ev = _evidence(run, prefix)
    summary = ((ev or {}).get("summary") or {}).get(split)
    if summary is None:
        return None, file, _evidence_absent(run, prefix, f"no {split} in {file}")
    if not summary.get("has_regions", True):
        return None, file, "skipped: the test set has no region annotations"
    if not summary.get("images_scored", 1):
        return None, file, "skipped: no image of the test set has a labelled region"
    insane = sanity_problem(ev, rule, prefix)
    if insane:
        return None, file, insane
    key = "energy_share_mean" if what == "energy" else "pointing_hit_rate"
    margin = rule.energy_share_margin if what == "energy" else rule.pointing_margin
    if margin is not None and summary.get(f"{what}_chance_mean") is None:
        return None, file, f"{file} has no chance level for {split}; rerun its step"
    return summary.get(key), file, ""


def read_sanity(run: SeedRun, arg: tuple[str, str]) -> Reading:
    prefix, _ = arg
    file = f"{prefix}.json"
    ev = _evidence(run, prefix)
    if ev is None:
        return None, file, _evidence_absent(run, prefix, "")
    sanity = ev.get("sanity")
    if not isinstance(sanity, dict):
        return None, file, f"{file} has no sanity check; rerun its step"
    if sanity.get("spearman_mean") is None:
        return None, file, f"skipped: {sanity.get('skipped') or 'no map was compared'}"
    return sanity["spearman_mean"], file, ""


def read_coverage_at_target(run: SeedRun, arg: tuple[str, float]) -> Reading:
    """Coverage of the operating point: the share of the test set answered at the lowest confidence threshold where
    soft accuracy on the answered images reaches the target (0 when none does)."""
    from harness import stats

    split, target = arg
    s = _split(run, split)
    if not s:
        return None, "metrics.json", _absent(run, "metrics.json", f"no {split} in metrics.json")
    preds = s.get("predictions") or []
    if not preds:
        return None, "metrics.json", f"metrics.json: no per-image predictions for {split}; rerun harness evaluate"
    conf = [max((p.get("probabilities") or {0: 0.0}).values()) for p in preds]
    op = stats.operating_point(conf, [bool(p["soft_correct"]) for p in preds], target)
    return (op["coverage"] if op else 0.0), "metrics.json", ""


def read_parity(run: SeedRun, _: str) -> Reading:
    if run.kind == "check":
        return None, "export.json", "skipped: no PyTorch reference to compare with (harness check judges an ONNX file)"
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


def _judge(
    criterion: str,
    variant: str,
    subject: str,
    runs: Sequence[SeedRun],
    reader: Callable[[SeedRun, str], Reading],
    arg: str,
    comparison: str,
    threshold: float | None,
    gated: bool,
    how: str,
    run_dir: Path,
    shown_threshold: float | None = None,
    detail: str = "",
    backbone: str = "",
    chance: float | None = None,
) -> Verdict:
    shown = threshold if shown_threshold is None else shown_threshold
    if not runs:
        return Verdict(
            criterion,
            variant,
            subject,
            comparison,
            shown,
            None,
            ERROR,
            gated,
            (),
            "no trained seed of this variant in the run directory",
            backbone=backbone,
            chance=chance,
        )
    readings = {f"s{r.seed}": reader(r, arg) for r in runs}
    evidence = tuple(sorted({str((r.folder / readings[f"s{r.seed}"][1]).relative_to(run_dir)) for r in runs}))
    per_seed = {k: v[0] for k, v in readings.items()}
    notes = sorted({v[2] for v in readings.values() if v[2]})
    if threshold is None:  # reported (with the value when there is one), never judged
        known = [v for v in per_seed.values() if v is not None]
        value = _aggregate(known, comparison == "<=", how) if known and len(known) == len(per_seed) else None
        return Verdict(
            criterion,
            variant,
            subject,
            comparison,
            None,
            value,
            SKIP,
            gated,
            evidence,
            "; ".join(filter(None, ["no threshold set", detail])),
            per_seed,
            backbone,
            chance,
        )
    if any(v is None for v in per_seed.values()):
        status = SKIP if notes and all(n.startswith("skipped") for n in notes) else ERROR
        return Verdict(
            criterion,
            variant,
            subject,
            comparison,
            shown,
            None,
            status,
            gated,
            evidence,
            "; ".join(notes) or "evidence missing: rerun the step that writes it",
            per_seed,
            backbone,
            chance,
        )
    value = _aggregate(list(per_seed.values()), comparison == "<=", how)
    ok = {">=": value >= threshold - 1e-12, ">": value > threshold + 1e-12, "<=": value <= threshold + 1e-12}[
        comparison
    ]
    agg = f"{how} of {len(runs)} seed(s)" if len(runs) > 1 else "1 seed"
    return Verdict(
        criterion,
        variant,
        subject,
        comparison,
        shown,
        value,
        PASS if ok else FAIL,
        gated,
        evidence,
        "; ".join(filter(None, [detail, agg])),
        per_seed,
        backbone,
        chance,
    )


ACCURACY_CRITERIA = (
    "accuracy",
    "soft_above_constant",
    "strict_above_constant",
    "strict_accuracy",
    "wilson_lower",
    "wilson_above_constant",
)


def _plain_variant(entry: str, backbones: Sequence[str]) -> tuple[str, str]:
    """'vgg16-imagenet-all' -> ('vgg16', 'imagenet-all'); 'imagenet-all' -> ('', 'imagenet-all')."""
    for b in sorted(backbones, key=len, reverse=True):
        if b and entry.startswith(b + "-"):
            return b, entry[len(b) + 1 :]
    return "", entry


def read_wilson_minus_constant(run: SeedRun, split: str) -> Reading:
    return _metric(run, split, lambda s: s["soft"]["wilson"][0] - s["baselines"]["constant_soft"]["value"])


def _accuracy_verdicts(
    variant: str,
    backbone: str,
    split: str,
    runs: Sequence[SeedRun],
    thresholds: Thresholds,
    gated: bool,
    how: str,
    run_dir: Path,
) -> list[Verdict]:
    """The accuracy criteria of one test set: its named rule, else the default rule (above the best constant answer
    by a margin, Wilson lower bound above it). Soft and strict accuracy must always beat the best constant answer
    (strict: unless the rule says otherwise): no test set of a run goes unjudged."""
    named = thresholds.accuracy.get(split)
    rule: AccuracyRule = named or thresholds.accuracy_default
    const = next((_split(r, split) for r in runs if _split(r, split)), None)
    base = (const or {}).get("baselines") or {}
    const_soft = (base.get("constant_soft") or {}).get("value")
    const_strict = (base.get("constant_strict") or {}).get("value")
    kw = dict(gated=gated, how=how, run_dir=run_dir, backbone=backbone)
    out = []
    default = "" if named else " (default rule: no [thresholds.accuracy.<test set>] names this test set)"
    if named is not None or rule.soft_margin is not None or rule.soft_min > 0:
        soft_thr = rule.soft_min
        if rule.soft_margin is not None and const_soft is not None:
            soft_thr = max(soft_thr, const_soft + rule.soft_margin)
        out.append(
            _judge(
                "accuracy",
                variant,
                split,
                runs,
                read_soft,
                split,
                ">=",
                soft_thr,
                chance=const_soft,
                detail=(f"soft accuracy; best constant answer scores {const_soft}" if const else "")
                + (f", margin {rule.soft_margin}" if rule.soft_margin is not None else "")
                + default,
                **kw,
            )
        )
    out.append(
        _judge(
            "soft_above_constant",
            variant,
            split,
            runs,
            read_soft_minus_constant,
            split,
            ">",
            0.0,
            chance=const_soft,
            detail="soft accuracy minus the best constant answer's" + default,
            **kw,
        )
    )
    if rule.strict_above_constant:
        out.append(
            _judge(
                "strict_above_constant",
                variant,
                split,
                runs,
                read_strict_minus_constant,
                split,
                ">",
                0.0,
                chance=const_strict,
                detail="strict accuracy minus the best constant answer's" + default,
                **kw,
            )
        )
    if rule.strict_min is not None:
        out.append(
            _judge(
                "strict_accuracy",
                variant,
                split,
                runs,
                read_strict,
                split,
                ">=",
                rule.strict_min,
                chance=const_strict,
                detail="strict (primary-label) accuracy",
                **kw,
            )
        )
    if rule.wilson_lower_min is not None:
        out.append(
            _judge(
                "wilson_lower",
                variant,
                split,
                runs,
                read_wilson_lower,
                split,
                ">=",
                rule.wilson_lower_min,
                chance=const_soft,
                detail="Wilson 95% lower bound of soft accuracy",
                **kw,
            )
        )
    if rule.wilson_above_constant:
        out.append(
            _judge(
                "wilson_above_constant",
                variant,
                split,
                runs,
                read_wilson_minus_constant,
                split,
                ">",
                0.0,
                chance=const_soft,
                detail="Wilson 95% lower bound of soft accuracy minus the best constant answer's" + default,
                **kw,
            )
        )
    return out


def _localization_splits(runs: Sequence[SeedRun], prefix: str, rule: CamRule, test_sets: Sequence[str]) -> list[str]:
    """The rule's split, or (split "") every test set whose evidence says it has regions; with no evidence at all,
    every test set (each then reports what is missing)."""
    if rule.split:
        return [rule.split]
    for r in runs:
        summary = (_evidence(r, prefix) or {}).get("summary")
        if isinstance(summary, dict):
            return [s for s in test_sets if (summary.get(s) or {}).get("has_regions")]
    return list(test_sets)


METHOD_TEXT = {"cam": "Grad-CAM", "occlusion": "occlusion", "rise": "RISE"}


def _localization_verdicts(
    method: str,
    variant: str,
    backbone: str,
    runs: Sequence[SeedRun],
    rule: CamRule,
    test_sets: Sequence[str],
    gated: bool,
    how: str,
    run_dir: Path,
) -> list[Verdict]:
    """<prefix>_energy / <prefix>_pointing per split with regions, thresholds relative to a uniform map's chance
    level; <prefix>_sanity (maps of a randomised model must differ) when the rule bounds it."""
    prefix = SALIENCY_EVIDENCE[method]
    name = METHOD_TEXT[prefix]
    kw = dict(gated=gated, how=how, run_dir=run_dir, backbone=backbone)
    splits = _localization_splits(runs, prefix, rule, test_sets)
    out: list[Verdict] = []
    if not splits:
        for what in ("energy", "pointing"):
            out.append(
                Verdict(
                    f"{prefix}_{what}",
                    variant,
                    "",
                    ">=",
                    None,
                    None,
                    SKIP,
                    gated,
                    (),
                    "skipped: no test set of this run has labelled regions",
                    backbone=backbone,
                )
            )
        return out
    for split in splits:
        ev = next((_evidence(r, prefix) for r in runs if _evidence(r, prefix)), None)
        summary = ((ev or {}).get("summary") or {}).get(split) or {}
        for what, mn, margin, text in (
            (
                "energy",
                rule.energy_share_min,
                rule.energy_share_margin,
                f"mean share of the {name} map's energy inside the labelled regions",
            ),
            (
                "pointing",
                rule.pointing_rate_min,
                rule.pointing_margin,
                f"{name} pointing-game hit rate (peak within the tolerance of the region)",
            ),
        ):
            chance = summary.get(f"{what}_chance_mean")
            thr = mn
            if margin is not None and chance is not None:
                thr = max(mn or 0.0, chance + margin)
            elif margin is not None and thr is None:
                thr = margin  # no chance level readable: the reader reports why (ERROR), the threshold is shown
            detail = (
                text
                + (f"; a uniform map scores {chance:.3f}" if chance is not None else "")
                + (f", margin {margin}" if margin is not None else "")
            )
            out.append(
                _judge(
                    f"{prefix}_{what}",
                    variant,
                    split,
                    runs,
                    read_localization,
                    (prefix, split, what, rule),
                    ">=",
                    thr,
                    chance=chance,
                    detail=detail,
                    **kw,
                )
            )
    if (rule.sanity_max is not None and rule.configured) or any(
        isinstance((_evidence(r, prefix) or {}).get("sanity"), dict) for r in runs
    ):
        out.append(
            _judge(
                f"{prefix}_sanity",
                variant,
                "",
                runs,
                read_sanity,
                (prefix, ""),
                "<=",
                rule.sanity_max,
                detail=f"mean Spearman rank correlation between the {name} maps of the trained model and "
                f"of the model with its last layer randomised (Adebayo et al. 2018); high = the maps "
                f"do not depend on the model",
                **(kw | {"how": "worst"}),
            )
        )
    return out


def _coverage(
    variant: str,
    backbone: str,
    test_sets: Sequence[str],
    verdicts: Sequence[Verdict],
    gated: bool,
    runs: Sequence[SeedRun],
    run_dir: Path,
) -> Verdict:
    """How many of the run's test sets an accuracy criterion actually judged (a value compared: PASS or FAIL).

    A variant that was judged on fewer test sets than the run has is never PASS: FAIL is impossible to argue with
    here, so it is an ERROR (the gate had nothing, or not everything, to judge)."""
    judged = {
        s: [
            v.criterion
            for v in verdicts
            if v.subject == s and v.criterion in ACCURACY_CRITERIA and v.status in (PASS, FAIL)
        ]
        for s in test_sets
    }
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
    return Verdict(
        "test_sets_judged",
        variant,
        "",
        ">=",
        float(len(test_sets)),
        float(len(done)),
        status,
        gated,
        evidence,
        detail,
        {},
        backbone,
    )


def judge(
    run_dir: Path,
    thresholds: Thresholds,
    test_sets: Iterable[str],
    variants: Iterable[str] = (),
    backbone: str = "",
    run_profile: dict | None = None,
) -> list[Verdict]:
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
        if entry == EVERY_MODEL:  # "every model of the run": the models found, and those named in `variants`
            continue
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
        sel = thresholds.selective
        if sel.coverage_at_target_min is not None:
            for split in test_sets:
                mine.append(
                    _judge(
                        "coverage_at_target",
                        variant,
                        split,
                        runs,
                        read_coverage_at_target,
                        (split, sel.target),
                        ">=",
                        sel.coverage_at_target_min,
                        detail=f"share of the test set answered when answering only above the lowest "
                        f"confidence where soft accuracy reaches {sel.target:.0%}",
                        **kw,
                    )
                )
        for method in SALIENCY_EVIDENCE:
            rule = thresholds.localization(method)
            # Grad-CAM is reported for every trained model (SKIP when no rule); a method no rule names and no
            # evidence holds (Grad-CAM of a checked ONNX file) is left out
            if (
                rule.configured
                or any(_evidence(r, SALIENCY_EVIDENCE[method]) for r in runs)
                or (method == "gradcam" and not any(r.kind == "check" for r in runs))
            ):
                mine += _localization_verdicts(method, variant, b, runs, rule, test_sets, gated, how, run_dir)
        mine.append(
            _judge(
                "onnx_parity",
                variant,
                "",
                runs,
                read_parity,
                "",
                "<=",
                thresholds.parity_atol,
                detail=f"max |PyTorch - onnxruntime CPU| logit difference (rtol {thresholds.parity_rtol})",
                **(kw | {"how": "worst"}),
            )
        )
        mine.append(
            _judge(
                "latency",
                variant,
                f"batch{thresholds.latency_batch}",
                runs,
                read_latency,
                str(thresholds.latency_batch),
                "<=",
                thresholds.latency_max_ms,
                detail="median onnxruntime CPU latency (ms)",
                **(kw | {"how": "worst"}),
            )
        )
        out += mine
    return out


def judged_table(verdicts: Sequence[Verdict]) -> dict[str, dict[str, list[str]]]:
    """{model: {test set: [criteria that judged it]}}: which test sets were judged by what (for the report)."""
    table: dict[str, dict[str, list[str]]] = {}
    for v in verdicts:
        if v.criterion in ACCURACY_CRITERIA or v.criterion.endswith(("_energy", "_pointing")):
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
