"""`harness compare BASELINE NEW`: what changed between two runs on the same test images, and whether NEW regresses.

Conventions:
- A side is a run directory (its report.json) or a report.json file; its run directory is the file's folder (the
  `run_dir` recorded inside may name another machine, e.g. a nightly's artefact).
- Models are report.json's `variants[*].model` ('efficientnet_lite0-imagenet-all'); seeds are their folders'.
  A model's value on a test set is the mean over that side's seeds, its Wilson 95% interval the one of the counts
  pooled over those seeds (sum k of sum n: the same interval as the recorded one for a single seed).
- Paired evidence (flips, McNemar) pairs each prediction of BASELINE with NEW's for the same (seed, image), over the
  seeds both sides have, pooled. `stats.paired(a=BASELINE, b=NEW)`: a_only = right -> wrong, b_only = wrong -> right.
- Gated = NEW's thresholds (its report's protocol.thresholds, or --thresholds FILE) gate the model; the same test
  decides which verdicts count.
- Regression (`Thresholds.regression`, RegressionRule): see harness.regression (a gated verdict PASS -> not PASS, an
  accuracy drop above max_drop, a McNemar-significant fall). Localization and latency changes are reported, not
  judged: their gated criteria are verdicts.
- Nothing to pair (different classes, no common test set, a common test set whose images or recorded fingerprint
  differ) is a CompareError naming both report files. A report.json of the wrong shape, or whose counts are not what
  its per-image predictions give, is a ReportShapeError naming the file and the key (harness.report_shape); a run
  directory whose evidence files changed since its report.json was written is a CompareError naming them.
- Correctness is recomputed from each prediction (predicted label among the acceptable ones: soft; the primary label:
  strict). Both sides one run (the same directory or file, or two reports whose manifests are identical): the result
  says so (`same_run`).
"""

from __future__ import annotations

import datetime as _dt
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import artifacts, verify
from harness.regression import regressions, verdict_changes
from harness.report.compare_html import render_compare_html
from harness.report.markdown import SUMMARY, compare_summary
from harness.report_shape import check_report
from harness.robustness.compare import compare_robustness
from harness.saliency.registry import GRADCAM, METHODS
from harness.stats import paired, wilson
from harness.thresholds import Thresholds, is_gated, parse_thresholds

__all__ = [
    "CompareError",
    "load_report",
    "thresholds_of_report",
    "compare_reports",
    "compare_paths",
    "default_out_dir",
    "write_compare",
]

REPORT = "report.json"


class CompareError(ValueError):
    """The two reports cannot be compared (nothing to pair); the message names both report files."""


# --- loading ------------------------------------------------------------------------------------------------------


def load_report(path: Path | str) -> tuple[dict[str, Any], Path]:
    """(report, run_dir) from a run directory (its report.json) or a report.json file.

    FileNotFoundError when neither exists (a run directory without report.json: run `harness report DIR`);
    ValueError when the file is not a harness report.json.
    """
    path = Path(path)
    if path.is_dir():
        file, run_dir = path / REPORT, path
        if not file.is_file():
            raise FileNotFoundError(
                f"{path} is a directory without {REPORT}; run `harness report {path}` to write "
                f"it (or pass a report.json file)"
            )
    elif path.is_file():
        file, run_dir = path, path.parent
    else:
        raise FileNotFoundError(f"{path} does not exist (expected a run directory or a report.json file)")
    report = artifacts.read_json(file)
    check_report(report, str(file))
    _check_evidence(report, run_dir, str(file))
    return report, run_dir


def _check_evidence(report: Mapping[str, Any], run_dir: Path, file: str) -> None:
    """CompareError when evidence files of the run directory changed since its report.json was written (a report
    copied without its run directory is compared as it is: only files present are checked)."""
    recorded = report.get("manifest")
    if not isinstance(recorded, dict) or not recorded:
        return
    present = {k: v for k, v in recorded.items() if k != verify.PROTOCOL and (Path(run_dir) / str(k)).is_file()}
    changed = [line.split(":")[0] for line in verify.check(run_dir, present) if "changed since" in line]
    if changed:
        raise CompareError(
            f"{file}: {_some(changed)} changed since this report was written, so it no longer describes the "
            f"run; rerun `harness report {run_dir}` (harness verify {run_dir} lists every difference)"
        )


def thresholds_of_report(report: Mapping[str, Any], where: str, user_file: Path | None = None) -> Thresholds:
    """The thresholds recorded in a report (protocol.thresholds), optionally overridden by a user TOML file."""
    raw = (report.get("protocol") or {}).get("thresholds")
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: protocol.thresholds is missing; rewrite the report with `harness report DIR`")
    return parse_thresholds({k: v for k, v in raw.items() if k != "source"}, str(raw.get("source") or where), user_file)


# --- reading one side -----------------------------------------------------------------------------------------------


def _models(report: Mapping[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """model -> seed -> variant entry."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for entry in report["variants"].values():
        if not isinstance(entry, dict):
            continue
        model = entry.get("model") or f"{entry.get('backbone')}-{entry.get('variant')}"
        out.setdefault(str(model), {})[int(entry.get("seed") or 0)] = entry
    return out


def _test_sets(report: Mapping[str, Any]) -> list[str]:
    proto = report["protocol"]
    names = list((proto.get("profile") or {}).get("test_sets") or [])
    names += [s for s in ((proto.get("data") or {}).get("test") or {}) if s not in names]
    for entry in report["variants"].values():
        names += [s for s in (entry.get("test_sets") or {}) if s not in names]
    return names


def _classes(report: Mapping[str, Any]) -> list[str] | None:
    classes = (report["protocol"].get("data") or {}).get("classes")
    if classes:
        return list(classes)
    for entry in report["variants"].values():
        for ts in (entry.get("test_sets") or {}).values():
            if ts.get("classes"):
                return list(ts["classes"])
    return None


def _images(report: Mapping[str, Any], split: str) -> set[str]:
    return {
        str(p.get("image"))
        for entry in report["variants"].values()
        for p in ((entry.get("test_sets") or {}).get(split) or {}).get("predictions") or []
    }


def _fingerprint(report: Mapping[str, Any], split: str) -> Any:
    return ((report["protocol"].get("data") or {}).get("test") or {}).get(split)


def _some(names: Iterable[str], k: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _check_pairable(base: Mapping[str, Any], new: Mapping[str, Any], files: tuple[str, str]) -> list[str]:
    """The common test sets; CompareError when nothing can be paired."""
    fb, fn = files
    cb, cn = _classes(base), _classes(new)
    if cb is not None and cn is not None and cb != cn:
        raise CompareError(
            f"nothing to pair: {fb} has classes {cb}, {fn} has classes {cn} "
            f"(protocol.data.classes); compare runs of the same dataset"
        )
    tb, tn = _test_sets(base), _test_sets(new)
    common = [s for s in tn if s in tb]
    if not common:
        raise CompareError(f"nothing to pair: no common test set: {fb} has {tb}, {fn} has {tn}")
    for split in common:
        hb, hn = _fingerprint(base, split), _fingerprint(new, split)
        if hb is not None and hn is not None and hb != hn:
            raise CompareError(
                f"nothing to pair: test set {split!r} has different images: fingerprint "
                f"(protocol.data.test.{split}) {hb} in {fb}, {hn} in {fn}"
            )
        ib, in_ = _images(base, split), _images(new, split)
        if ib and in_ and ib != in_:
            raise CompareError(
                f"nothing to pair: test set {split!r} has different images: {len(ib)} in {fb}, "
                f"{len(in_)} in {fn}; only in the first: {_some(ib - in_) or 'none'}; only in the "
                f"second: {_some(in_ - ib) or 'none'}"
            )
    return common


# --- per (model, test set) ------------------------------------------------------------------------------------------


def _side_accuracy(per_seed: Mapping[int, Mapping[str, Any]], kind: str) -> dict[str, Any] | None:
    """Counted from the per-image predictions: k and n pooled over the seeds, the value the mean of the seeds'."""
    seeds = [[_correct(p, kind) for p in ts.get("predictions") or []] for ts in per_seed.values()]
    seeds = [s for s in seeds if s]
    if not seeds:
        return None
    k, n = sum(sum(s) for s in seeds), sum(len(s) for s in seeds)
    value = statistics.fmean(sum(s) / len(s) for s in seeds)
    return {"value": value, "k": k, "n": n, "seeds": len(seeds), "wilson": list(wilson(k, n)) if n else None}


def _correct(pred: Mapping[str, Any], kind: str) -> bool:
    """Whether a per-image prediction is right (soft: one of its acceptable labels; strict: its primary label)."""
    if kind == "strict":
        return pred.get("predicted") == pred.get("primary")
    return pred.get("predicted") in (pred.get("acceptable") or ())


def _pairs(
    base: Mapping[int, Mapping[str, Any]], new: Mapping[int, Mapping[str, Any]], seeds: Sequence[int]
) -> list[tuple[int, dict, dict]]:
    """(seed, BASELINE prediction, NEW prediction) for every image both predicted, seed by seed, sorted."""
    out = []
    for seed in seeds:
        pb = {str(p["image"]): p for p in base[seed].get("predictions") or []}
        pn = {str(p["image"]): p for p in new[seed].get("predictions") or []}
        out += [(seed, pb[img], pn[img]) for img in sorted(pb) if img in pn]
    return out


def _flip(seed: int, b: Mapping[str, Any], n: Mapping[str, Any]) -> dict[str, Any]:
    def conf(p: Mapping[str, Any]) -> float | None:
        probs = p.get("probabilities") or {}
        return probs.get(p.get("predicted")) if isinstance(probs, Mapping) else None

    return {
        "seed": seed,
        "image": str(b["image"]),
        "primary": b.get("primary"),
        "acceptable": b.get("acceptable"),
        "baseline_predicted": b.get("predicted"),
        "new_predicted": n.get("predicted"),
        "baseline_confidence": conf(b),
        "new_confidence": conf(n),
    }


def _summary_value(entry: Mapping[str, Any], method: str, split: str, key: str) -> float | None:
    """A summary figure of one saliency method's evidence in a variant entry: Grad-CAM's at the entry's top
    (`cam`), the others under `saliency` (`saliency.occlusion`); `method` is the registry's evidence key."""
    ev = entry.get(method) if method == METHODS[GRADCAM].evidence else (entry.get("saliency") or {}).get(method)
    v = (((ev or {}).get("summary") or {}).get(split) or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _localization(base: Mapping[int, dict], new: Mapping[int, dict], split: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in (m.evidence for m in METHODS.values()):
        row = {}
        for key, name in (("energy_share_mean", "energy_share"), ("pointing_hit_rate", "pointing_rate")):
            vb = _mean(_summary_value(e, method, split, key) for e in base.values())
            vn = _mean(_summary_value(e, method, split, key) for e in new.values())
            if vb is not None and vn is not None:
                row[name] = {"baseline": vb, "new": vn, "delta": vn - vb}
        if row:
            out[method] = row
    return out


def _compare_split(
    model: str, split: str, base: Mapping[int, dict], new: Mapping[int, dict], gated: bool, files: tuple[str, str]
) -> dict[str, Any]:
    tb = {s: e["test_sets"][split] for s, e in base.items() if split in (e.get("test_sets") or {})}
    tn = {s: e["test_sets"][split] for s, e in new.items() if split in (e.get("test_sets") or {})}
    common = sorted(set(tb) & set(tn))
    pairs = _pairs(tb, tn, common)
    row: dict[str, Any] = {
        "model": model,
        "test_set": split,
        "gated": gated,
        "seeds": {"baseline": sorted(tb), "new": sorted(tn), "paired": common},
        "n": len(next(iter(tn.values())).get("predictions") or []) if tn else None,
        "pairs": len(pairs),
    }
    for kind in ("soft", "strict"):
        ab, an = _side_accuracy(tb, kind), _side_accuracy(tn, kind)
        p = (
            paired([_correct(b, kind) for _, b, _ in pairs], [_correct(n, kind) for _, _, n in pairs])
            if pairs
            else None
        )
        row[kind] = {"baseline": ab, "new": an, "delta": an["value"] - ab["value"] if ab and an else None, "paired": p}
    row["flips"] = {
        "right_to_wrong": [_flip(s, b, n) for s, b, n in pairs if _correct(b, "soft") and not _correct(n, "soft")],
        "wrong_to_right": [_flip(s, b, n) for s, b, n in pairs if not _correct(b, "soft") and _correct(n, "soft")],
    }
    row["localization"] = _localization({s: base[s] for s in tb}, {s: new[s] for s in tn}, split)
    return row


def _latency_ms(entry: Mapping[str, Any], batch: int) -> float | None:
    rec = (((entry.get("latency") or {}).get("by_provider") or {}).get("CPUExecutionProvider") or {}).get(
        str(batch)
    ) or {}
    v = rec.get("median_ms")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _latency(model: str, base: Mapping[int, dict], new: Mapping[int, dict], batch: int) -> dict[str, Any] | None:
    """Median over seeds of each side's median CPU time per call of `batch` images; ratio NEW / BASELINE."""
    vb = [v for v in (_latency_ms(e, batch) for e in base.values()) if v is not None]
    vn = [v for v in (_latency_ms(e, batch) for e in new.values()) if v is not None]
    if not vb or not vn:
        return None
    mb, mn = statistics.median(vb), statistics.median(vn)
    return {
        "model": model,
        "provider": "CPUExecutionProvider",
        "batch": batch,
        "baseline_ms": mb,
        "new_ms": mn,
        "ratio": mn / mb if mb > 0 else None,
    }


# --- entry points ---------------------------------------------------------------------------------------------------


def _side(report: Mapping[str, Any], run_dir: Path, file: str) -> dict[str, Any]:
    proto = report["protocol"]
    return {
        "file": file,
        "run_dir": str(run_dir),
        "name": Path(run_dir).resolve().name,
        "recorded_run_dir": report.get("run_dir"),
        "created": report.get("created"),
        "verdict": report.get("verdict"),
        "data_root": proto.get("data_root"),
        "profile": (proto.get("profile") or {}).get("name"),
        "seeds": list(proto.get("seeds") or []),
    }


def compare_reports(
    baseline: Mapping[str, Any],
    new: Mapping[str, Any],
    thresholds: Thresholds | None,
    baseline_dir: Path | str,
    new_dir: Path | str,
    *,
    baseline_file: str | None = None,
    new_file: str | None = None,
) -> dict[str, Any]:
    """The JSON-ready comparison of two reports (see the module docstring for every convention).

    thresholds None: NEW's recorded ones. baseline_file / new_file: how errors name the reports (default
    <dir>/report.json).
    """
    files = (baseline_file or str(Path(baseline_dir) / REPORT), new_file or str(Path(new_dir) / REPORT))
    check_report(baseline, files[0])
    check_report(new, files[1])
    if thresholds is None:
        thresholds = thresholds_of_report(new, files[1])
    common = _check_pairable(baseline, new, files)
    mb, mn = _models(baseline), _models(new)
    tb, tn = _test_sets(baseline), _test_sets(new)
    rows: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    only_b: list[str] = []
    only_n: list[str] = []
    for model in list(mn) + [m for m in mb if m not in mn]:
        if model not in mb or model not in mn:
            (only_n if model in mn else only_b).append(model)
            continue
        ref = next(iter(mn[model].values()))
        gated = is_gated(thresholds, str(ref.get("backbone") or ""), str(ref.get("variant") or ""))
        for split in common:
            has_b = any(split in (e.get("test_sets") or {}) for e in mb[model].values())
            has_n = any(split in (e.get("test_sets") or {}) for e in mn[model].values())
            if has_b and has_n:
                rows.append(_compare_split(model, split, mb[model], mn[model], gated, files))
            elif has_b or has_n:
                (only_b if has_b else only_n).append(f"{model} on {split}")
        lat = _latency(model, mb[model], mn[model], thresholds.latency_batch)
        if lat:
            latency.append(lat | {"gated": gated})
    changes = verdict_changes(baseline, new, thresholds)
    robust = compare_robustness(baseline, new, thresholds)  # corruption / masking / faithfulness deltas
    found = regressions(rows, changes, thresholds) + robust.pop("regressions")
    rule = thresholds.regression
    return {
        "schema": 1,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "baseline": _side(baseline, Path(baseline_dir), files[0]),
        "new": _side(new, Path(new_dir), files[1]),
        "thresholds": {
            "source": thresholds.source,
            "gated": list(thresholds.gated),
            "regression": {"max_drop": rule.max_drop, "mcnemar_p": rule.mcnemar_p},
        },
        "classes": _classes(new),
        "test_sets": common,
        "only_in_baseline": {"test_sets": [s for s in tb if s not in common], "models": only_b},
        "only_in_new": {"test_sets": [s for s in tn if s not in common], "models": only_n},
        "comparisons": rows,
        "latency": latency,
        "robustness": robust,
        "verdict_changes": changes,
        "regressions": found,
        "verdict": "REGRESSION" if found else "OK",
        "same_run": same_run(baseline, new, files),
    }


def same_run(baseline: Mapping[str, Any], new: Mapping[str, Any], files: tuple[str, str]) -> str | None:
    """Why BASELINE and NEW are one run (the same report file, or reports with identical non-empty manifests: the
    same evidence files), or None."""
    if Path(files[0]).resolve() == Path(files[1]).resolve():
        return f"both sides are one run: {files[0]} is compared with itself; there is nothing to compare"
    mb, mn = baseline.get("manifest"), new.get("manifest")
    if isinstance(mb, dict) and mb and mb == mn:
        return (
            f"both sides are one run: {files[0]} and {files[1]} vouch for the same evidence files (identical "
            f"manifests: a copy of one run); there is nothing to compare"
        )
    return None


def compare_paths(
    baseline: Path | str, new: Path | str, thresholds_file: Path | None = None
) -> tuple[dict[str, Any], Path]:
    """load_report both sides and compare them with NEW's thresholds (overridden by thresholds_file).
    Returns (result, NEW's run directory)."""
    rb, db = load_report(baseline)
    rn, dn = load_report(new)
    fb = str(Path(baseline) if Path(baseline).is_file() else db / REPORT)
    fn = str(Path(new) if Path(new).is_file() else dn / REPORT)
    thresholds = thresholds_of_report(rn, fn, thresholds_file)
    return compare_reports(rb, rn, thresholds, db, dn, baseline_file=fb, new_file=fn), dn


def default_out_dir(result: Mapping[str, Any]) -> Path:
    """NEW_RUN_DIR/compare-<baseline run directory's name>/."""
    return Path(result["new"]["run_dir"]) / f"compare-{result['baseline']['name']}"


def write_compare(result: Mapping[str, Any], out_dir: Path | str | None = None) -> tuple[Path, Path]:
    """compare.json, a self-contained compare.html and summary.md in out_dir (default: default_out_dir), written
    atomically."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(result)
    json_path = artifacts.write_json(out / "compare.json", result)
    html_path = artifacts.write_text(out / "compare.html", render_compare_html(result))
    artifacts.write_text(out / SUMMARY, compare_summary(result))  # for a CI job summary or a pull request
    return json_path, html_path
