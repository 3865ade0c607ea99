"""The judge: every criterion of the table for every model of a run, each read from its evidence over the seeds and
compared with its threshold (PASS / FAIL), or ERROR / SKIP with the reason."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.audit import verdicts as data_audit  # a module import: harness.audit imports harness.verdicts
from harness.baselines import judging as ladder  # likewise: harness.baselines imports harness.verdicts
from harness.robustness.judging import robustness_verdicts
from harness.saliency.registry import METHODS
from harness.saliency.settings import black_box_computed
from harness.thresholds import EVERY_MODEL, AccuracyRule, CamRule, Thresholds, is_gated
from harness.verdicts.collect import SeedRun, collect, evidence_of
from harness.verdicts.criteria import (
    ACCURACY_CRITERIA,
    ENERGY,
    POINTING,
    SANITY,
    criterion,
    judges_a_test_set,
    localization_criterion,
)
from harness.verdicts.protocol import protocol_verdict
from harness.verdicts.readers import split_metrics
from harness.verdicts.verdict import ERROR, FAIL, PASS, SKIP, Verdict, model_key


def _aggregate(values: Sequence[float], lower_is_better: bool, how: str) -> float:
    if how == "mean":
        return statistics.fmean(values)
    return max(values) if lower_is_better else min(values)


def _judge(
    name: str,
    variant: str,
    subject: str,
    runs: Sequence[SeedRun],
    arg: Any,
    threshold: float | None,
    gated: bool,
    how: str,
    run_dir: Path,
    detail: str = "",
    backbone: str = "",
    chance: float | None = None,
) -> Verdict:
    """One verdict of criterion `name`: its reader on every seed run (with `arg`), aggregated (`how`, or the worst
    seed where the criterion says so) and compared with `threshold` (None: reported, never judged)."""
    c = criterion(name)
    assert c.reader is not None, f"criterion {name} has no reader"
    comparison, how = c.comparison, "worst" if c.worst else how
    if not runs:
        return Verdict(
            name,
            variant,
            subject,
            comparison,
            threshold,
            None,
            ERROR,
            gated,
            (),
            "no trained seed of this variant in the run directory",
            backbone=backbone,
            chance=chance,
        )
    readings = {f"s{r.seed}": c.reader(r, arg) for r in runs}
    evidence = tuple(sorted({str((r.folder / readings[f"s{r.seed}"][1]).relative_to(run_dir)) for r in runs}))
    per_seed = {k: v[0] for k, v in readings.items()}
    notes = sorted({v[2] for v in readings.values() if v[2]})
    if threshold is None:  # reported (with the value when there is one), never judged
        known = [v for v in per_seed.values() if v is not None]
        value = _aggregate(known, comparison == "<=", how) if known and len(known) == len(per_seed) else None
        return Verdict(
            name,
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
    values = [v for v in per_seed.values() if v is not None]
    if len(values) < len(per_seed):
        status = SKIP if notes and all(n.startswith("skipped") for n in notes) else ERROR
        return Verdict(
            name,
            variant,
            subject,
            comparison,
            threshold,
            None,
            status,
            gated,
            evidence,
            "; ".join(notes) or "evidence missing: rerun the step that writes it",
            per_seed,
            backbone,
            chance,
        )
    value = _aggregate(values, comparison == "<=", how)
    ok = {">=": value >= threshold - 1e-12, ">": value > threshold + 1e-12, "<=": value <= threshold + 1e-12}[
        comparison
    ]
    agg = f"{how} of {len(runs)} seed(s)" if len(runs) > 1 else "1 seed"
    return Verdict(
        name,
        variant,
        subject,
        comparison,
        threshold,
        value,
        PASS if ok else FAIL,
        gated,
        evidence,
        "; ".join(filter(None, [detail, agg])),
        per_seed,
        backbone,
        chance,
    )


def _plain_variant(entry: str, backbones: Sequence[str]) -> tuple[str, str]:
    """A gated entry of the thresholds against the run's backbones: 'vgg16-imagenet-all' -> ('vgg16', 'imagenet-all');
    'imagenet-all' -> ('', 'imagenet-all')."""
    for b in sorted(backbones, key=len, reverse=True):
        if b and entry.startswith(b + "-"):
            return b, entry[len(b) + 1 :]
    return "", entry


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
    const = next((split_metrics(r, split) for r in runs if split_metrics(r, split)), None)
    base = (const or {}).get("baselines") or {}
    const_soft = (base.get("constant_soft") or {}).get("value")
    const_strict = (base.get("constant_strict") or {}).get("value")
    out = []

    def judge(name: str, threshold: float | None, chance: float | None, detail: str) -> None:
        out.append(_judge(name, variant, split, runs, split, threshold, gated, how, run_dir, detail, backbone, chance))

    default = "" if named else " (default rule: no [thresholds.accuracy.<test set>] names this test set)"
    if named is not None or rule.soft_margin is not None or rule.soft_min > 0:
        soft_thr = rule.soft_min
        if rule.soft_margin is not None and const_soft is not None:
            soft_thr = max(soft_thr, const_soft + rule.soft_margin)
        judge(
            "accuracy",
            soft_thr,
            const_soft,
            (f"soft accuracy; best constant answer scores {const_soft}" if const else "")
            + (f", margin {rule.soft_margin}" if rule.soft_margin is not None else "")
            + default,
        )
    judge("soft_above_constant", 0.0, const_soft, "soft accuracy minus the best constant answer's" + default)
    if rule.strict_above_constant:
        judge("strict_above_constant", 0.0, const_strict, "strict accuracy minus the best constant answer's" + default)
    if rule.strict_min is not None:
        judge("strict_accuracy", rule.strict_min, const_strict, "strict (primary-label) accuracy")
    if rule.wilson_lower_min is not None:
        judge("wilson_lower", rule.wilson_lower_min, const_soft, "Wilson 95% lower bound of soft accuracy")
    if rule.wilson_above_constant:
        judge(
            "wilson_above_constant",
            0.0,
            const_soft,
            "Wilson 95% lower bound of soft accuracy minus the best constant answer's" + default,
        )
    return [_impossible(v, split, base) for v in out]


ABOVE_CONSTANT = {"soft_above_constant": "soft", "wilson_above_constant": "soft", "strict_above_constant": "strict"}


def _impossible(v: Verdict, split: str, base: dict[str, Any]) -> Verdict:
    """A bar no model can reach is ERROR saying why, never a FAIL against an unexplained 1.1: above a best constant
    answer that already scores 1.0 (a test set of one class), or an accuracy bar above 1 (constant answer + margin)."""
    kind = ABOVE_CONSTANT.get(v.criterion, "soft" if v.criterion == "accuracy" else None)
    const = (base.get(f"constant_{kind}") or {}) if kind else {}
    if not isinstance(const.get("value"), (int, float)) or v.status not in (PASS, FAIL):
        return v
    if v.criterion == "accuracy" and (v.threshold or 0.0) <= 1.0 + 1e-12:
        return v
    if v.criterion != "accuracy" and const["value"] < 1.0 - 1e-12:
        return v
    label, value = const.get("label"), round(float(const["value"]), 4)
    said = f"the best constant answer ({label!r}) already scores {value} {kind} accuracy on {split}"
    if value >= 1.0 - 1e-12:
        why = (
            f"{said}, so no model can score above it: {split} cannot be judged above the constant answer (it cannot "
            f"tell the model from one that always answers {label!r}); add photos of other classes to {split}"
        )
    else:
        why = (
            f"{said}, so the bar {v.threshold:.4g} (its score + soft_margin) is above 1 and no model can reach it; "
            f"lower soft_margin, or name {split} in [thresholds.accuracy.{split}] with a soft_min"
        )
    return dataclasses.replace(v, status=ERROR, detail=f"{why}; {v.detail}")


def _localization_splits(runs: Sequence[SeedRun], prefix: str, rule: CamRule, test_sets: Sequence[str]) -> list[str]:
    """The rule's split, or (split "") every test set whose evidence says it has regions; with no evidence at all,
    every test set (each then reports what is missing)."""
    if rule.split:
        return [rule.split]
    for r in runs:
        summary = (evidence_of(r, prefix) or {}).get("summary")
        if isinstance(summary, dict):
            return [s for s in test_sets if (summary.get(s) or {}).get("has_regions")]
    return list(test_sets)


def _skipped_localization(method: str, variant: str, backbone: str, gated: bool, why: str) -> list[Verdict]:
    """SKIP verdicts of a method's energy and pointing criteria, saying why they were not judged."""
    out = []
    for what in (ENERGY, POINTING):
        c = localization_criterion(method, what)
        skipped = f"skipped: {why}"
        out.append(Verdict(c.name, variant, "", c.comparison, None, None, SKIP, gated, (), skipped, backbone=backbone))
    return out


def _not_computed(run_profile: Mapping[str, Any] | None, method: str, gated: bool, runs: Sequence[SeedRun]) -> bool:
    """A black-box method the run computes (the recorded profile's saliency.methods) but not for this model, by
    design: saliency.black_box_scope is "gated", the model is not gated and none of its seeds holds the method's
    evidence. (A gated model without it is judged, and its missing evidence is an ERROR.)"""
    info = METHODS[method]
    saliency = (run_profile or {}).get("saliency")
    if not info.black_box or not isinstance(saliency, Mapping) or method not in (saliency.get("methods") or ()):
        return False
    return not black_box_computed(saliency, gated) and not any(evidence_of(r, info.evidence) for r in runs)


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
    info = METHODS[method]
    prefix, name = info.evidence, info.title
    splits = _localization_splits(runs, prefix, rule, test_sets)
    if not splits:
        return _skipped_localization(method, variant, backbone, gated, "no test set of this run has labelled regions")
    out: list[Verdict] = []
    for split in splits:
        ev = next((evidence_of(r, prefix) for r in runs if evidence_of(r, prefix)), None)
        summary = ((ev or {}).get("summary") or {}).get(split) or {}
        for what, mn, margin, text in (
            (
                ENERGY,
                rule.energy_share_min,
                rule.energy_share_margin,
                f"mean share of the {name} map's energy inside the labelled regions",
            ),
            (
                POINTING,
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
                    localization_criterion(method, what).name,
                    variant,
                    split,
                    runs,
                    (prefix, split, what, rule),
                    thr,
                    gated,
                    how,
                    run_dir,
                    detail,
                    backbone,
                    chance,
                )
            )
    if (rule.sanity_max is not None and rule.configured) or any(
        isinstance((evidence_of(r, prefix) or {}).get("sanity"), dict) for r in runs
    ):
        out.append(
            _judge(
                localization_criterion(method, SANITY).name,
                variant,
                "",
                runs,
                (prefix, ""),
                rule.sanity_max,
                gated,
                how,
                run_dir,
                f"mean Spearman rank correlation between the {name} maps of the trained model and "
                f"of the model with its last layer randomised (Adebayo et al. 2018); high = the maps "
                f"do not depend on the model",
                backbone,
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
        criterion("test_sets_judged").comparison,
        float(len(test_sets)),
        float(len(done)),
        status,
        gated,
        evidence,
        detail,
        {},
        backbone,
    )


def _models(
    groups: dict[str, list[SeedRun]], thresholds: Thresholds, variants: Iterable[str], backbone: str
) -> dict[str, tuple[str, str]]:
    """model key -> (backbone, variant) of every model to judge: those found, every gated one and every one named
    (those two of `backbone`, the run's, when no folder has them); gated ones first."""
    models: dict[str, tuple[str, str]] = {key: (runs[0].backbone, runs[0].variant) for key, runs in groups.items()}
    present = {v for _, v in models.values()}
    known_backbones = {b for b, _ in models.values()} | ({backbone} if backbone else set())
    for entry in list(thresholds.gated) + list(variants):
        if entry == EVERY_MODEL:  # "every model of the run": the models found, and those named in `variants`
            continue
        b, v = _plain_variant(entry, sorted(known_backbones))
        if (b and model_key(b, v) not in models) or (not b and v not in present):
            models.setdefault(model_key(b or backbone, v), (b or backbone, v))
    order = sorted(models, key=lambda k: (not is_gated(thresholds, *models[k]), models[k][1], models[k][0]))
    return {k: models[k] for k in order}


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
    `test_sets_judged` verdict counting them. Gated variants come first; the run's `protocol` verdict comes last.
    """
    run_dir = Path(run_dir)
    groups = collect(run_dir, run_profile) if run_dir.is_dir() else {}
    how = thresholds.seed_aggregate
    test_sets = list(test_sets)
    out: list[Verdict] = []
    for key, (b, variant) in _models(groups, thresholds, variants, backbone).items():
        runs, gated = groups.get(key, []), is_gated(thresholds, b, variant)
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
                        (split, sel.target),
                        sel.coverage_at_target_min,
                        gated,
                        how,
                        run_dir,
                        f"share of the test set answered when answering only above the lowest "
                        f"confidence where soft accuracy reaches {sel.target:.0%}",
                        b,
                    )
                )
        for method, info in METHODS.items():
            rule = thresholds.localization(method)
            # a method that needs the PyTorch model (Grad-CAM) is reported for every trained model (SKIP when no
            # rule); a method no rule names and no evidence holds (Grad-CAM of a checked ONNX file) is left out
            if _not_computed(run_profile, method, gated, runs):
                why = f"{info.title} maps are computed for gated models only (saliency.black_box_scope = 'gated')"
                mine += _skipped_localization(method, variant, b, gated, why)
            elif (
                rule.configured
                or any(evidence_of(r, info.evidence) for r in runs)
                or (not info.black_box and not any(r.kind == "check" for r in runs))
            ):
                mine += _localization_verdicts(method, variant, b, runs, rule, test_sets, gated, how, run_dir)
        mine += ladder.probe_verdicts(variant, b, runs, thresholds.probe, test_sets, gated, run_dir)  # beats_probe
        mine += robustness_verdicts(
            variant, b, runs, thresholds.robustness, test_sets, gated, how, run_dir, run_profile, _judge
        )
        mine.append(
            _judge(
                "onnx_parity",
                variant,
                "",
                runs,
                "",
                thresholds.parity_atol,
                gated,
                how,
                run_dir,
                f"max |PyTorch - onnxruntime CPU| logit difference (rtol {thresholds.parity_rtol})",
                b,
            )
        )
        mine.append(
            _judge(
                "latency",
                variant,
                f"batch{thresholds.latency_batch}",
                runs,
                str(thresholds.latency_batch),
                thresholds.latency_max_ms,
                gated,
                how,
                run_dir,
                "median onnxruntime CPU latency (ms)",
                b,
            )
        )
        out += mine
    out += data_audit.audit_verdicts(run_dir, thresholds, test_sets)  # the data itself: harness.audit
    out.append(protocol_verdict(run_dir, thresholds.gated))  # the run as a whole: sealed protocol, gated, judged
    return out


def judged_table(verdicts: Sequence[Verdict]) -> dict[str, dict[str, list[str]]]:
    """{model: {test set: [criteria that judged it]}}: which test sets were judged by what (for the report)."""
    table: dict[str, dict[str, list[str]]] = {}
    for v in verdicts:
        if judges_a_test_set(v.criterion) and v.subject and v.status in (PASS, FAIL):
            table.setdefault(v.model, {}).setdefault(v.subject, []).append(v.criterion)
    return table
