"""beats_probe[<model>-<test set>] and the ladder of report.json, both from per-image evidence: the model's checked
metrics.json predictions and baselines.json's probe predictions, paired by image (harness.baselines.evidence).

A model beats the probe on a test set when its soft accuracy is at least the probe's minus [thresholds.probe]
soft_margin, and the exact McNemar test does not find it significantly worse (p < mcnemar_p while right on fewer of
the disputed images than the probe); the worst seed counts. Which verdicts exist: every model's, per test set, when
baselines.json exists, when run.json records the ladder step, or when the rule gates; a run from before the step has
none. Each gates only where the rule says so (an ablation by default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.baselines.evidence import baseline_rows, pair, promised, read_baselines
from harness.baselines.files import BASELINES_FILE
from harness.baselines.rules import ProbeRule
from harness.metrics import accuracy_summary, baselines
from harness.verdicts.collect import SeedRun
from harness.verdicts.criteria import criterion
from harness.verdicts.recheck import checked_split
from harness.verdicts.verdict import ERROR, FAIL, PASS, SKIP, Verdict

BEATS_PROBE = "beats_probe"


def _model_rows(run: SeedRun, split: str) -> tuple[list[dict[str, Any]] | None, str]:
    s, why = checked_split(run, split)
    if s is None:
        return None, why or f"metrics.json has no {split}"
    return [{k: p[k] for k in ("image", "primary", "acceptable", "predicted")} for p in s["predictions"]], ""


def seed_reading(run: SeedRun, ev: Mapping[str, Any], split: str) -> tuple[dict[str, Any] | None, str]:
    """One seed run against the probe on `split`: {margin (soft minus the probe's), soft, probe_soft, paired} or
    (None, why)."""
    probe, probe_sum, why = baseline_rows(ev, split, "probe")
    if probe is None or probe_sum is None:
        return None, why
    rows, why = _model_rows(run, split)
    if rows is None:
        return None, why
    paired, why = pair(rows, probe)
    if paired is None:
        return None, why
    soft = (paired["both"] + paired["a_only"]) / paired["n"]
    probe_soft = probe_sum["soft"]["value"]
    return {"margin": soft - probe_soft, "soft": soft, "probe_soft": probe_soft, "paired": paired}, ""


def _verdict(variant, backbone, split, runs, ev, problem, rule: ProbeRule, gated, run_dir: Path) -> Verdict:
    c = criterion(BEATS_PROBE)
    threshold = -rule.soft_margin
    evidence = tuple(sorted({BASELINES_FILE} | {str((r.folder / "metrics.json").relative_to(run_dir)) for r in runs}))

    def make(status: str, value: float | None, detail: str, per_seed=None, chance=None) -> Verdict:
        return Verdict(
            BEATS_PROBE, variant, split, c.comparison, threshold, value, status, gated, evidence, detail,
            per_seed or {}, backbone, chance,
        )  # fmt: skip

    if ev is None:
        return make(ERROR, None, problem)
    if not runs:
        return make(ERROR, None, "no trained seed of this variant in the run directory")
    readings = {f"s{r.seed}": seed_reading(r, ev, split) for r in runs}
    whys = sorted({why for rd, why in readings.values() if rd is None})
    if whys:
        status = SKIP if all(w.startswith("skipped") for w in whys) else ERROR
        return make(status, None, "; ".join(whys), {k: None for k in readings})
    got = {k: rd for k, (rd, _) in readings.items() if rd is not None}
    worst_key = min(got, key=lambda k: got[k]["margin"])
    worse = {  # right on fewer of the disputed images than the probe, and McNemar says it is no accident
        k: rd
        for k, rd in got.items()
        if rd["paired"]["b_only"] > rd["paired"]["a_only"] and rd["paired"]["p"] < rule.mcnemar_p
    }
    if worse:
        worst_key = min(worse, key=lambda k: worse[k]["paired"]["p"])
    w = got[worst_key]
    value = min(rd["margin"] for rd in got.values())
    ok = value >= threshold - 1e-12 and not worse
    pr = w["paired"]
    detail = (
        f"soft accuracy {w['soft']:.3f} vs the linear probe's {w['probe_soft']:.3f} on {pr['n']} images (seed "
        f"{worst_key[1:]}): right where the probe is wrong {pr['a_only']}, wrong where it is right {pr['b_only']}, "
        f"exact McNemar p = {pr['p']:.3g}"
        + (f" < {rule.mcnemar_p}: significantly worse" if worse else "")
        + (f"; soft margin {rule.soft_margin}" if rule.soft_margin else "")
        + (f"; worst of {len(got)} seeds" if len(got) > 1 else "")
    )
    per_seed = {k: rd["margin"] for k, rd in got.items()}
    return make(PASS if ok else FAIL, value, detail, per_seed, w["probe_soft"])


def probe_verdicts(
    variant: str,
    backbone: str,
    runs: Sequence[SeedRun],
    rule: ProbeRule,
    test_sets: Sequence[str],
    gated: bool,
    run_dir: Path,
) -> list[Verdict]:
    """beats_probe of one model on every test set (none for a run that never computed the ladder and gates none)."""
    run_dir = Path(run_dir)
    if not ((run_dir / BASELINES_FILE).exists() or promised(run_dir) or rule.gated):
        return []
    ev, problem = read_baselines(run_dir)
    gates = gated and rule.gated
    return [_verdict(variant, backbone, s, runs, ev, problem, rule, gates, run_dir) for s in test_sets]


def _rung(name: str, rows: list[dict[str, Any]], classes: Sequence[str], probe=None, **extra: Any) -> dict[str, Any]:
    """One line of the ladder: n, soft and strict ({k, value, wilson}) recomputed from the rows, and the exact
    McNemar test of its soft correctness against the probe's (model_only / probe_only / p)."""
    s = accuracy_summary(
        [r["predicted"] for r in rows], [r["acceptable"] for r in rows], [r["primary"] for r in rows], classes
    )
    line = {"name": name, **extra, "n": s["n"], "soft": s["soft"], "strict": s["strict"]}
    if probe is not None:
        paired, why = pair(rows, probe)
        line["mcnemar_vs_probe"] = (
            {"model_only": paired["a_only"], "probe_only": paired["b_only"], "p": paired["p"]} if paired else None
        )
        if why:
            line["note"] = why
    return line


def ladder(run_dir: Path, groups: Mapping[str, Sequence[SeedRun]], test_sets: Sequence[str]) -> dict[str, Any]:
    """report.json's `ladder`: per test set, the constant answer -> kNN -> linear probe -> each model's seed runs,
    each with n, soft, strict (Wilson intervals) and McNemar against the probe; with what the baselines were made from
    (features, chosen C and k). {"available": False, "why"} without a usable baselines.json."""
    ev, why = read_baselines(run_dir)
    if ev is None:
        return {"available": False, "why": why}
    out: dict[str, Any] = {
        "available": True,
        "features": ev.get("features"),
        "probe": {k: (ev.get("probe") or {}).get(k) for k in ("C", "folds", "method")},
        "knn": {k: (ev.get("knn") or {}).get(k) for k in ("k", "folds", "method")},
        "train": ev.get("train"),
        "skipped": ev.get("skipped") or "",
        "seconds": (ev.get("seconds") or {}).get("total"),
        "test_sets": {},
    }
    for split in test_sets:
        probe, _, why = baseline_rows(ev, split, "probe")
        knn, _, why_knn = baseline_rows(ev, split, "knn")
        if probe is None or knn is None:
            out["test_sets"][split] = {"available": False, "why": why or why_knn}
            continue
        entry = ((ev.get("test_sets") or {}).get(split) or {}).get("probe") or {}
        classes = list(entry.get("classes") or [])
        base = baselines(classes, [r["acceptable"] for r in probe], [r["primary"] for r in probe])
        label = base["constant_soft"]["label"]
        constant = [r | {"predicted": label} for r in probe]
        lines = [
            _rung("constant", constant, classes, probe, label=label, strict_label=base["constant_strict"]["label"]),
            _rung("knn", knn, classes, probe),
            _rung("probe", probe, classes),
        ]
        strict_label = base["constant_strict"]["label"]
        lines[0]["strict"] = _rung("c", [r | {"predicted": strict_label} for r in probe], classes)["strict"]
        for key, runs in groups.items():
            for r in runs:
                rows, why = _model_rows(r, split)
                if rows is None:
                    lines.append({"name": key, "model": key, "seed": r.seed, "available": False, "why": why})
                    continue
                lines.append(_rung(key, rows, classes, probe, model=key, seed=r.seed))
        out["test_sets"][split] = {"available": True, "n": len(probe), "lines": lines}
    return out
