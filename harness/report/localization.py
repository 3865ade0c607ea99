"""The report's saliency sections: per method, each model's overlays with their localization summary, and the
localization table (energy share and pointing rate beside a uniform map's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.report.format import NA, data_uri, dig, fmt_acc, is_num, split_label
from harness.report.models import model_of
from harness.report.robustness import faithfulness_cells
from harness.report.wording import NO_REGIONS, WORDS, method_title
from harness.saliency.registry import GRADCAM, MethodInfo
from harness.verdicts.criteria import ENERGY, POINTING, localization_criterion


def _overlay(run_dir: Path, rel: str | None, embed: bool) -> tuple[str | None, str]:
    """(data URI or None, note) for one overlay file."""
    if not rel:
        return None, "no overlay"
    path = run_dir / rel
    if not embed:
        return None, ""
    try:
        data = path.read_bytes()
    except OSError:
        return None, f"overlay file missing: {rel}"
    if not data.startswith(b"\x89PNG"):
        return None, f"not a PNG: {rel}"
    return data_uri(data), ""


def _skipped_for_regions(verdicts: Sequence[Mapping[str, Any]], name: str) -> bool:
    """True when every Grad-CAM localization verdict of `name` is SKIP for want of labelled regions (and one exists)."""
    criteria = {localization_criterion(GRADCAM, aspect).name for aspect in (ENERGY, POINTING)}
    mine = [v for v in verdicts if model_of(v) == name and v.get("criterion") in criteria]
    return bool(mine) and all(v.get("status") == "SKIP" and "region" in str(v.get("detail") or "") for v in mine)


def _evidence_of(run: Mapping[str, Any] | None, method: MethodInfo) -> Mapping[str, Any] | None:
    """A variant entry's saliency evidence of a method: a black-box method's under 'saliency', Grad-CAM's at the top
    ('cam')."""
    if not run:
        return None
    key = method.evidence
    ev = dig(run, "saliency", key, default=None) if method.black_box else run.get(key)
    return ev if isinstance(ev, Mapping) else None


def _chance_text(summ: Mapping[str, Any], what: str) -> str:
    c = summ.get(f"{what}_chance_mean")
    return f" (a uniform map: {fmt_acc(c)})" if is_num(c) else ""


def _threshold_text(thr: Mapping[str, Any], key: str) -> str:
    return f" (threshold ≥ {fmt_acc(thr.get(key))})" if thr.get(key) is not None else ""


def saliency_section(
    report: Mapping[str, Any],
    run_dir: Path,
    order: Sequence[str],
    runs: Mapping[str, list],
    gated: Sequence[str],
    split: str,
    book: bool,
    verdicts: Sequence[Mapping[str, Any]],
    method: MethodInfo,
    limit: int,
) -> dict[str, Any]:
    """One saliency method's section: per model, the first seed's overlays on `split` with their summary (at most
    `limit` overlays embedded in all, else only the gated models')."""
    key, title = method.evidence, method.title
    thr = dig(report, "protocol", "thresholds", method.thresholds_key, default={}) or {}
    firsts = {name: (runs.get(name) or [None])[0] for name in order}
    n_overlays = sum(
        1
        for r in firsts.values()
        if r
        for im in (dig(_evidence_of(r, method), "images", split, default=[]) or [])
        if isinstance(im, Mapping) and im.get("overlay_path")
    )
    embed_all = n_overlays <= limit
    groups = []
    for name in order:
        first = firsts[name]
        is_gated = name in gated
        group: dict[str, Any] = {
            "variant": name,
            "gated": is_gated,
            "open": is_gated or (not gated and name == order[0]),
            "folder": first.get("folder") if first else None,
            "seed": first.get("seed") if first else None,
            "available": False,
            "images": [],
            "embedded": embed_all or is_gated,
            "summary": [],
            "skipped": NO_REGIONS if _skipped_for_regions(verdicts, name) else "",
            "other_seeds": [
                f"{r['folder']}/{key}/{split}/"
                for r in (runs.get(name) or [])[1:]
                if dig(_evidence_of(r, method), "images", split)
            ],
        }
        ev = _evidence_of(first, method)
        images = dig(ev, "images", split, default=None)
        if images:
            group["available"] = True
            summ = dig(ev, "summary", split, default={}) or {}
            if summ.get("has_regions", True) is False:
                group["summary"].append(NO_REGIONS)
            else:
                regions = WORDS[book]["regions"]
                group["summary"].append(
                    f"energy inside {regions} {fmt_acc(summ.get('energy_share_mean'))}"
                    + _chance_text(summ, "energy")
                    + _threshold_text(thr, "energy_share_min")
                )
                group["summary"].append(
                    f"pointing-game hit rate {fmt_acc(summ.get('pointing_hit_rate'))}"
                    + _chance_text(summ, "pointing")
                    + _threshold_text(thr, "pointing_rate_min")
                )
                rho = dig(ev, "sanity", "spearman_mean")
                if is_num(rho):
                    group["summary"].append(f"sanity: rank correlation with a randomised last layer {rho:.2f}")
            for im in images:
                if not isinstance(im, Mapping):
                    continue
                src, note = _overlay(run_dir, im.get("overlay_path"), group["embedded"])
                correct = im.get("correct")
                group["images"].append(
                    {
                        "name": Path(str(im.get("image") or "?")).name,
                        "label": im.get("label") or "?",
                        "predicted": im.get("predicted") or "?",
                        "probability": fmt_acc(im.get("probability")) if is_num(im.get("probability")) else "",
                        "correct": correct,
                        "correct_text": "correct" if correct else "wrong" if correct is False else "?",
                        "status": im.get("status") or "",
                        "src": src,
                        "note": note,
                        "path": im.get("overlay_path") or "",
                    }
                )
            group["n_correct"] = sum(1 for im in group["images"] if im["correct"])
        groups.append(group)
    some = next((_evidence_of(r, method) for r in firsts.values() if _evidence_of(r, method)), None) or {}
    cost = ""
    if is_num(some.get("seconds_per_image")):
        cost = f"{some['seconds_per_image']:.2f} s per image" + (
            f", {some['passes_per_image']:.0f} forward passes" if is_num(some.get("passes_per_image")) else ""
        )
    return {
        "split": split_label(split),
        "groups": groups,
        "embed_all": embed_all,
        "n_overlays": n_overlays,
        "limit": limit,
        "method": dig(some, "protocol", "method", default=""),
        "key": key,
        "title": title,
        "anchor": f"saliency-{key}" if method.black_box else key,
        "cost": cost,
        "available": bool(some),
    }


def localization_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """report.json's localization table (every figure beside a uniform map's chance level), formatted."""
    rows = []
    for r in report.get("localization") or []:
        if not isinstance(r, Mapping):
            continue
        rows.append(
            {
                "model": r.get("model"),
                "method": method_title(r.get("method")),
                "split": split_label(r.get("split") or "") if r.get("split") else "-",
                "gated": bool(r.get("gated")),
                "energy": fmt_acc(r.get("energy")) if is_num(r.get("energy")) else NA,
                "energy_chance": fmt_acc(r.get("energy_chance")) if is_num(r.get("energy_chance")) else NA,
                "energy_status": r.get("energy_status") or "",
                "pointing": fmt_acc(r.get("pointing")) if is_num(r.get("pointing")) else NA,
                "pointing_chance": fmt_acc(r.get("pointing_chance")) if is_num(r.get("pointing_chance")) else NA,
                "pointing_status": r.get("pointing_status") or "",
                "sanity": f"{r['sanity_spearman']:.2f}" if is_num(r.get("sanity_spearman")) else "-",
                "sanity_status": r.get("sanity_status") or "",
                "note": r.get("energy_detail") or r.get("pointing_detail") or "",
            }
            | faithfulness_cells(report, r)  # deletion / insertion AUC beside a random map's
        )
    return rows
