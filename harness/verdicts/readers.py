"""Readers: each takes one seed run's evidence and returns (value or None, evidence file name, note) for a criterion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness import stats
from harness.saliency.registry import method_info
from harness.thresholds import CamRule
from harness.verdicts.collect import SeedRun, evidence_of
from harness.verdicts.recheck import checked_split

Reading = tuple[float | None, str, str]
Reader = Callable[[SeedRun, Any], Reading]  # (seed run, the criterion's argument: a test set, (method, split...))


def split_metrics(run: SeedRun, split: str) -> dict[str, Any] | None:
    """One test set's accuracy summary, recomputed from metrics.json's per-image predictions; None when absent or
    when the file's summary disagrees with them (`_split` says why)."""
    return checked_split(run, split)[0]


def _split(run: SeedRun, split: str) -> tuple[dict[str, Any] | None, str]:
    """(the checked summary, "") or (None, why there is none: the file's problem, the test set missing, or the
    stored summary not matching its per-image predictions)."""
    s, why = checked_split(run, split)
    return s, ("" if s else why or _absent(run, "metrics.json", f"no {split} in metrics.json"))


def _absent(run: SeedRun, file: str, what: str) -> str:
    """Why a reading has no value: the file's problem (invalid JSON, stale...) when it has one, else what is missing."""
    return run.problems.get(file) or (f"{file} missing" if getattr(run, file.split(".")[0]) is None else what)


def _metric(run: SeedRun, split: str, value: Callable[[dict[str, Any]], float]) -> Reading:
    s, why = _split(run, split)
    if not s:
        return None, "metrics.json", why
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


def read_wilson_minus_constant(run: SeedRun, split: str) -> Reading:
    return _metric(run, split, lambda s: s["soft"]["wilson"][0] - s["baselines"]["constant_soft"]["value"])


def evidence_absent(run: SeedRun, prefix: str, what: str) -> str:
    """Why a seed run has no usable saliency evidence <prefix>.json (its problem, a skip, or it is missing), else
    `what`."""
    file = f"{prefix}.json"
    if run.problems.get(file):
        return run.problems[file]
    method = method_info(prefix)
    if not method.black_box and run.kind == "check":
        return (
            f"skipped: {method.title} needs the PyTorch model; a model judged by harness check has only its ONNX file"
        )
    return f"{file} missing" if evidence_of(run, prefix) is None else what


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
    ev = evidence_of(run, prefix)
    summary = ((ev or {}).get("summary") or {}).get(split)
    if ev is None or summary is None:
        return None, file, evidence_absent(run, prefix, f"no {split} in {file}")
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
    if summary.get(key) is None:
        return None, file, ""
    return _number(summary[key], file, f"summary.{split}.{key}", "rerun its step")


def read_sanity(run: SeedRun, arg: tuple[str, str]) -> Reading:
    """(prefix, ""): the mean Spearman correlation of the maps with those of the model whose last layer was
    randomised."""
    prefix, _ = arg
    file = f"{prefix}.json"
    ev = evidence_of(run, prefix)
    if ev is None:
        return None, file, evidence_absent(run, prefix, "")
    sanity = ev.get("sanity")
    if not isinstance(sanity, dict):
        return None, file, f"{file} has no sanity check; rerun its step"
    if sanity.get("spearman_mean") is None:
        return None, file, f"skipped: {sanity.get('skipped') or 'no map was compared'}"
    return _number(sanity["spearman_mean"], file, "sanity.spearman_mean", "rerun its step")


def read_coverage_at_target(run: SeedRun, arg: tuple[str, float]) -> Reading:
    """Coverage of the operating point: the share of the test set answered at the lowest confidence threshold where
    soft accuracy on the answered images reaches the target (0 when none does)."""
    split, target = arg
    s, why = _split(run, split)
    if not s:
        return None, "metrics.json", why
    preds = s["predictions"]
    conf = [max((p.get("probabilities") or {0: 0.0}).values()) for p in preds]
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0.0 <= c <= 1.0 for c in conf):
        return (
            None,
            "metrics.json",
            (
                f"metrics.json: test_sets.{split}.predictions has a probability that is not a number in [0, 1]; "
                "the file was edited or is corrupt: rerun harness evaluate"
            ),
        )
    op = stats.operating_point(conf, [p["predicted"] in p["acceptable"] for p in preds], target)
    return (op["coverage"] if op else 0.0), "metrics.json", ""


def read_parity(run: SeedRun, _: str) -> Reading:
    if run.kind == "check":
        return None, "export.json", "skipped: no PyTorch reference to compare with (harness check judges an ONNX file)"
    cpu = ((run.export or {}).get("parity") or {}).get("cpu") or {}
    if "max_abs" not in cpu:
        return None, "export.json", _absent(run, "export.json", "no CPU parity record in export.json")
    if cpu.get("test_sets") and any(t.get("top1_mismatches") for t in cpu["test_sets"].values()):
        return float("inf"), "export.json", "top-1 differs between PyTorch and onnxruntime"
    return _number(cpu["max_abs"], "export.json", "parity.cpu.max_abs", "rerun harness export --force")


def read_latency(run: SeedRun, batch: str) -> Reading:
    by = ((run.metrics or {}).get("latency") or {}).get("by_provider") or {}
    cpu = by.get("CPUExecutionProvider", {}).get(batch)
    if cpu is None:
        return None, "metrics.json", _absent(run, "metrics.json", f"no CPU latency at batch {batch}")
    key = f"latency.by_provider.CPUExecutionProvider.{batch}.median_ms"
    return _number(cpu.get("median_ms"), "metrics.json", key, "rerun harness evaluate")


def _number(value: Any, file: str, key: str, fix: str) -> Reading:
    """(value, file, "") when it is a number that is not NaN (inf is a number here), else (None, file, why)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None, file, f"{file}: {key} = {value!r} is not a number; the file was edited or is corrupt: {fix}"
    return float(value), file, ""
