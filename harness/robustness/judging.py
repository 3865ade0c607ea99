"""The robustness verdicts of one model, for the judge (harness.verdicts.judge calls `robustness_verdicts` with its own
`_judge`, which reads each seed run through harness.robustness.readers and compares with the threshold):

- robustness[<model>-<test set>-<corruption>]: the drop of soft accuracy from the same photos clean <= max_drop;
- depends_on_object[<model>-<test set>]: hiding the labelled regions loses the answer more often than hiding the
  same shape elsewhere (the lower 95% bound of the paired difference > object_margin), per test set with regions;
- faithfulness[<model>-<method>-<test set>]: the maps' (insertion - deletion AUC) beats a random map's by more than
  faithfulness_margin.

Which verdicts exist: those the evidence holds; those the rule gates (ERROR when the evidence is missing: a gated
criterion never passes by absence); and, for a model whose recorded profile runs the robustness step, those its
settings promise (ERROR when the file is missing). Each gates only where [thresholds.robustness] says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.robustness.corruptions import CORRUPTIONS
from harness.robustness.files import FAITHFULNESS_FILE, ROBUSTNESS_FILE
from harness.robustness.measures import corruption_summary
from harness.robustness.readers import faithfulness_of, load, masking_of
from harness.robustness.rules import RobustnessRule
from harness.robustness.settings import RobustnessSettings, parse_robustness
from harness.saliency.registry import METHODS
from harness.saliency.settings import black_box_computed
from harness.validate import ConfigError

ROBUSTNESS, DEPENDS_ON_OBJECT, FAITHFULNESS = "robustness", "depends_on_object", "faithfulness"


def _first(runs: Sequence[Any], file: str) -> dict[str, Any] | None:
    return next((ev for r in runs if (ev := load(r, file)[0]) is not None), None)


def recorded_settings(run_profile: Mapping[str, Any] | None) -> RobustnessSettings | None:
    """The [robustness] settings a run's recorded profile ran with (None: a profile from before the step)."""
    raw = (run_profile or {}).get("robustness")
    if raw is None:
        return None
    try:
        return parse_robustness(raw, "run.json: profile")
    except ConfigError:
        return None


def _pct(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "n/a"


def drop_detail(ev: Mapping[str, Any] | None, split: str, corruption: str, rule: RobustnessRule) -> str:
    """The figures behind a robustness verdict: accuracies, the drop with its interval, McNemar (worst severity)."""
    title = CORRUPTIONS[corruption].title if corruption in CORRUPTIONS else corruption
    base = f"drop of soft accuracy under {title} at severities <= {rule.max_severity} (the worst counts)"
    records = ((ev or {}).get("images") or {}).get(split)
    if not isinstance(records, list) or not records:
        return base
    try:
        sums = [
            (s, corruption_summary(records, corruption, int(s)))
            for s in (ev or {}).get("severities") or []
            if int(s) <= rule.max_severity
        ]
    except (ValueError, TypeError, KeyError, AttributeError):
        return base
    if not sums:
        return base
    s, m = max(sums, key=lambda t: t[1]["drop"])
    lo, hi = m["drop_interval"]
    return (
        f"soft accuracy {_pct(m['clean_soft'])} clean -> {_pct(m['soft'])} with {title} (severity {s}) on "
        f"{m['n']} images: drop {m['drop']:.2f}, 95% paired interval [{lo:.2f}, {hi:.2f}], exact McNemar "
        f"p = {m['mcnemar_p']:.3g} ({len(m['right_to_wrong'])} right -> wrong, {len(m['wrong_to_right'])} "
        f"wrong -> right)"
    )


def masking_detail(ev: Mapping[str, Any] | None, split: str) -> str:
    base = "lower 95% bound of (lost hiding the labelled regions - lost hiding the same shape elsewhere)"
    if ev is None:
        return base
    try:
        m, _ = masking_of(ev, split)
    except (ValueError, TypeError, KeyError, AttributeError):
        return base
    if m is None:
        return base
    lo, hi = m["difference_interval"]
    return (
        f"of {m['n']} images answered right, hiding the labelled regions loses the answer on "
        f"{_pct(m['object_lost'])}, hiding the same shape elsewhere on {_pct(m['random_lost'])} (mean of the draws; "
        f"{_pct(m['random_majority_lost'])} in most draws): difference {m['difference']:.2f}, 95% paired interval "
        f"[{lo:.2f}, {hi:.2f}], exact McNemar p = {m['mcnemar_p']:.3g}; keeping only the regions keeps "
        f"{_pct(m['kept'])}"
    )


def faithfulness_detail(ev: Mapping[str, Any] | None, method: str, split: str) -> str:
    base = f"(insertion - deletion AUC) of the {method} maps minus a random map's (Petsiuk et al. 2018)"
    if ev is None:
        return base
    try:
        m, _ = faithfulness_of(ev, method, split)
    except (ValueError, TypeError, KeyError, AttributeError):
        return base
    if m is None:
        return base
    return (
        f"{m['n']} images: deletion AUC {m['deletion']:.3f} (random map {m['deletion_random']:.3f}), insertion AUC "
        f"{m['insertion']:.3f} (random {m['insertion_random']:.3f}); the maps beat the random map on {m['wins']}, "
        f"lose on {m['losses']} (one-sided sign test p = {m['sign_test_p']:.3g})"
    )


def robustness_verdicts(
    variant: str,
    backbone: str,
    runs: Sequence[Any],
    rule: RobustnessRule,
    test_sets: Sequence[str],
    gated: bool,
    how: str,
    run_dir: Path,
    run_profile: Mapping[str, Any] | None,
    judge: Callable[..., Any],
) -> list[Any]:
    """Every robustness verdict of one model (see the module docstring); `judge` is harness.verdicts.judge._judge."""
    ev_r, ev_f = _first(runs, ROBUSTNESS_FILE), _first(runs, FAITHFULNESS_FILE)
    settings = recorded_settings(run_profile)
    promised = settings if runs and settings is not None and settings.enabled else None  # what the step must write
    out: list[Any] = []

    def verdict(name: str, subject: str, arg: Any, threshold: float, gates: bool, detail: str) -> None:
        out.append(judge(name, variant, subject, runs, arg, threshold, gated and gates, how, run_dir, detail, backbone))

    corruptions = list(ev_r.get("corruptions") or []) if ev_r else list(promised.corruptions) if promised else []
    corruptions += [c for c in rule.gated_corruptions if c not in corruptions]
    for split in test_sets:
        for c in corruptions:
            detail = drop_detail(ev_r, split, c, rule)
            verdict(ROBUSTNESS, f"{split}-{c}", (split, c, rule), rule.max_drop, rule.gates(c), detail)

    masking = (ev_r or {}).get("masking")
    if isinstance(masking, Mapping):
        splits = [s for s in test_sets if (masking.get(s) or {}).get("has_regions")] or (
            list(test_sets) if rule.object_gated else []
        )
    else:
        splits = (
            list(test_sets) if rule.object_gated or (ev_r is None and promised is not None and promised.masking) else []
        )
    for split in splits:
        verdict(DEPENDS_ON_OBJECT, split, split, rule.object_margin, rule.object_gated, masking_detail(ev_r, split))

    if ev_f is not None:
        methods = list(ev_f.get("methods") or {})
    elif promised is not None and promised.faithfulness:
        saliency = (run_profile or {}).get("saliency") or {}
        named = saliency.get("methods") or ()
        black_box_too = black_box_computed(saliency, gated)  # what the job computed
        methods = [METHODS[m].evidence for m in named if m in METHODS and (black_box_too or not METHODS[m].black_box)]
    else:
        methods = [m.evidence for m in METHODS.values()] if rule.faithfulness_gated else []
    for method in methods:
        for split in test_sets:
            detail = faithfulness_detail(ev_f, method, split)
            verdict(
                FAITHFULNESS,
                f"{method}-{split}",
                (method, split),
                rule.faithfulness_margin,
                rule.faithfulness_gated,
                detail,
            )
    return out
