"""report.json -> one self-contained report.html (inline CSS, every image a base64 data URI, no external URL).

`render_html(report, run_dir)` turns the report dict of `harness.report.build` into a view model of plain strings
and lists (this module: every number is formatted here, every missing piece becomes "not available") and renders
it with the jinja2 template `templates/report.html`. Derived figures (confusion matrices summed over seeds, the
training-curve plots) are computed here; report.json stays the single source of the numbers.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

__all__ = ["render_html", "is_book_dataset", "MAX_EMBEDDED_OVERLAYS"]

# Above this many CAM overlays (first seed of every variant, CAM test set), only the gated variants' are embedded
# and the others are listed as file paths, to keep the HTML file a reasonable size.
MAX_EMBEDDED_OVERLAYS = 60

NA = "not available"

INIT_ORDER = ("scratch", "imagenet")
INIT_LABELS = {"scratch": "scratch", "imagenet": "ImageNet"}
LEVEL_ORDER = ("none", "mixup", "usual", "all")
LEVEL_LABELS = {"none": "no augmentation", "mixup": "mixup only", "usual": "usual augmentation", "all": "usual + mixup"}
LEVEL_MEANING = {
    "none": "no augmentation",
    "mixup": "mixup of pairs of training images and their labels only",
    "usual": "flips, rotation, zoom and random erasing",
    "all": "the usual augmentation plus mixup",
}

# The reference experiment's single runs (Keras VGG16, 224 px, 2018; REFERENCE.md), soft accuracy easy / difficult.
REFERENCE_2018 = {
    ("scratch", "none"): (0.33, 0.10),
    ("scratch", "mixup"): (0.33, 0.25),
    ("scratch", "usual"): (0.83, 0.60),
    ("scratch", "all"): (1.00, 0.65),
    ("imagenet", "none"): (0.83, 0.35),
    ("imagenet", "mixup"): (1.00, 0.35),
    ("imagenet", "usual"): (1.00, 0.85),
    ("imagenet", "all"): (1.00, 0.95),
}

# The bundled dataset (data/small-book-images): its classes. Only a run on these classes gets the 2018 reference and
# the wording about books and covers; any other dataset gets neutral wording (WORDS[False], NEUTRAL_CRITERIA).
BOOK_CLASSES = frozenset({"background", "bayes", "geeks", "keras", "nlp", "technium"})

CRITERIA = {  # the book dataset's wording; NEUTRAL_CRITERIA replaces the book-specific entries for any other
    "accuracy": "soft accuracy: share of photos where the model names one of the books in the photo",
    "soft_above_constant": "soft accuracy minus that of always giving the best single answer (must be above 0)",
    "strict_above_constant": "strict accuracy (the photo's main book) minus that of the best single answer",
    "wilson_lower": "lower end of the 95% Wilson interval of soft accuracy (few test photos: wide intervals)",
    "cam_energy": "share of the Grad-CAM heat that falls inside the labelled book covers",
    "cam_pointing": "share of labelled covers whose Grad-CAM peak lies on (within 15 px of) the cover",
    "onnx_parity": "largest difference between the PyTorch model and the exported ONNX model (logits)",
    "latency": "median time of one onnxruntime CPU call (milliseconds)",
    "strict_accuracy": "strict accuracy: share of photos where the model names the photo's main book",
    "test_sets_judged": "how many of the run's test sets an accuracy criterion judged (all of them, or ERROR)",
    "wilson_above_constant": "lower end of the 95% Wilson interval of soft accuracy minus the best single answer's "
    "accuracy (must be above 0: the claim survives the small test set)",
    "cam_sanity": "rank correlation of the Grad-CAM maps with those of the model whose last layer was randomised "
    "(high: the maps do not depend on what the model learnt)",
    "occlusion_energy": "share of the occlusion map's heat (grey patches slid over the image, through onnxruntime) "
    "inside the labelled regions, beside a uniform map's share",
    "occlusion_pointing": "share of labelled regions whose occlusion-map peak lies on (within 15 px of) the region",
    "occlusion_sanity": "rank correlation of the occlusion maps with those of the model whose last layer was "
    "randomised (high: the maps do not depend on what the model learnt)",
    "rise_energy": "share of the RISE map's heat inside the labelled regions, beside a uniform map's share",
    "rise_pointing": "share of labelled regions whose RISE-map peak lies on (within 15 px of) the region",
    "rise_sanity": "rank correlation of the RISE maps with those of the model whose last layer was randomised",
}

# Saliency methods shown in the report: evidence key in a variant entry, title, thresholds key
SALIENCY_SECTIONS = (("cam", "Grad-CAM", "cam"), ("occlusion", "occlusion", "occlusion"), ("rise", "RISE", "rise"))

NEUTRAL_CRITERIA = {
    "accuracy": "soft accuracy: share of images where the model names one of the acceptable labels",
    "strict_above_constant": "strict accuracy (the image's primary label) minus that of the best single answer",
    "wilson_lower": "lower end of the 95% Wilson interval of soft accuracy (few test images: wide intervals)",
    "cam_energy": "share of the Grad-CAM heat that falls inside the labelled regions",
    "cam_pointing": "share of labelled regions whose Grad-CAM peak lies on (within 15 px of) the region",
    "strict_accuracy": "strict accuracy: share of images where the model names the image's primary label",
}

# Template phrases that differ between the bundled book dataset (True) and any other (False).
WORDS = {
    True: {
        "item": "photo",
        "items": "photos",
        "layout": "Laid out like the reference experiment's table.",
        "soft": "the answer names one of the books in the photo",
        "strict": "the photo's main book",
        "shared": "Several books share most difficult photos, so even guessing scores well on soft accuracy there.",
        "confusion_rows": "the photo's main (primary) book",
        "regions": "the labelled covers",
        "good_heat": "A good model's heat sits on a book cover, not on the floor or the photo's edges.",
    },
    False: {
        "item": "image",
        "items": "images",
        "layout": "Rows: weight initialisation; columns: augmentation level.",
        "soft": "the answer is one of the image's acceptable labels",
        "strict": "the image's primary label",
        "shared": "Where images accept several labels, even guessing scores well on soft accuracy.",
        "confusion_rows": "the image's primary label",
        "regions": "the labelled regions",
        "good_heat": "A good model's heat sits on the labelled object, not on the background or the image's edges.",
    },
}

NO_REGIONS = "localization skipped: no labelled regions"

VERDICT_TEXT = {
    "PASS": "Every gated criterion passed: the gated model meets the acceptance thresholds.",
    "FAIL": "At least one gated criterion failed: the gated model does not meet the acceptance thresholds.",
    "ERROR": "Some evidence is missing, so the gate could not decide: rerun the steps that write it.",
    "UNGATED": "No variant is gated in this profile: every figure below is for information only.",
}


# --- formatting ------------------------------------------------------------------------------------------------


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_num(v: Any, signed: bool = False) -> str:
    """Compact human number: 2-3 decimals for rates, scientific for tiny values, 'n/a' for None."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if not _is_num(v):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return ("+" if signed and v > 0 else "-" if v < 0 else "") + "inf"
    sign = "+" if signed and v > 0 else ""
    a = abs(v)
    if a == 0:
        s = "0.00"
    elif a < 1e-3:
        s = f"{v:.1e}"
    elif a >= 100:
        s = f"{v:.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.3f}".rstrip("0")
        decimals = len(s.split(".")[1]) if "." in s else 0
        s += "0" * max(0, 2 - decimals)
    return sign + s


def fmt_acc(v: Any) -> str:
    return "n/a" if v is None else fmt_num(v)


def fmt_ms(v: Any) -> str:
    return "n/a" if not _is_num(v) else (f"{v:.1f} ms" if v < 1000 else f"{v / 1000:.2f} s")


def fmt_value(criterion: str, v: Any) -> str:
    if v is None:
        return "n/a"
    if criterion == "onnx_parity":
        return "inf" if _is_num(v) and math.isinf(v) else (f"{v:.1e}" if _is_num(v) else str(v))
    if criterion == "latency":
        return fmt_ms(v)
    if criterion == "test_sets_judged":
        return f"{v:.0f}" if _is_num(v) else str(v)
    return fmt_num(v, signed=criterion.endswith("_above_constant"))


def fmt_any(v: Any) -> str:
    """Protocol values: lists joined, dicts as k=v, None as a dash."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if _is_num(v):
        return fmt_num(v) if isinstance(v, float) and (abs(v) < 1e-3 or v != round(v, 3)) else str(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_any(x) for x in v) if v else "-"
    if isinstance(v, Mapping):
        return "; ".join(f"{k}={fmt_any(x)}" for k, x in v.items()) if v else "-"
    return str(v)


def split_label(split: str) -> str:
    return split[5:] if split.startswith("test_") else split


def _date(iso: Any) -> str:
    try:
        d = _dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso) if iso else NA
    if d.tzinfo is not None:
        d = d.astimezone(_dt.UTC)
        return d.strftime("%Y-%m-%d %H:%M UTC")
    return d.strftime("%Y-%m-%d %H:%M")


def _d(obj: Any, *keys: Any, default: Any = None) -> Any:
    """Nested .get that tolerates None and non-dicts anywhere on the way."""
    for k in keys:
        if not isinstance(obj, Mapping) or k not in obj:
            return default
        obj = obj[k]
    return default if obj is None else obj


def report_classes(report: Mapping[str, Any]) -> tuple[str, ...]:
    """The run's classes: run.json's data classes (protocol.data.classes; a check run's protocol.classes), else the
    classes recorded in any variant's metrics (per test set); () when the report names none."""
    for where in (_d(report, "protocol", "data", "classes"), _d(report, "protocol", "classes")):
        if isinstance(where, (list, tuple)) and where:
            return tuple(str(c) for c in where)
    for entry in (report.get("variants") or {}).values():
        if not isinstance(entry, Mapping):
            continue
        candidates = [entry.get("classes")] + [
            m.get("classes") for m in (entry.get("test_sets") or {}).values() if isinstance(m, Mapping)
        ]
        for c in candidates:
            if isinstance(c, (list, tuple)) and c:
                return tuple(str(x) for x in c)
    return ()


def is_book_dataset(report: Mapping[str, Any]) -> bool:
    """True when the run's classes are exactly the bundled book dataset's (BOOK_CLASSES): only then does the report
    show the 2018 reference and speak of books and covers."""
    return set(report_classes(report)) == BOOK_CLASSES


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --- variants --------------------------------------------------------------------------------------------------


def _order_index(name: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(name), "") if name in order else (len(order), name)


def _model_name(d: Mapping[str, Any]) -> str | None:
    """The identity a report groups by: 'backbone-init-level' (older reports: the variant name alone)."""
    return d.get("model") or d.get("variant")


def _split_name(name: str) -> tuple[str, str, str]:
    """'vgg16-imagenet-all' -> ('vgg16', 'imagenet', 'all'); 'imagenet-all' -> ('', 'imagenet', 'all')."""
    bits = str(name).split("-")
    if len(bits) >= 3:
        return "-".join(bits[:-2]), bits[-2], bits[-1]
    init, _, level = str(name).partition("-")
    return "", init, level


def _canon(report: Mapping[str, Any]):
    """A function mapping a plain variant name of the protocol ('imagenet-all') to the report's model key."""
    entries = [e for e in (report.get("variants") or {}).values() if isinstance(e, Mapping)]
    keyed = any(e.get("model") for e in entries) or any(
        isinstance(v, Mapping) and v.get("model") for v in report.get("verdicts") or []
    )
    backbone = _d(report, "protocol", "profile", "backbone", default="")
    known = {_model_name(e) for e in entries} | set(report.get("matrix") or {})

    def canon(name: str) -> str:
        if name in known or not backbone:
            return name
        if f"{backbone}-{name}" in known:  # e.g. a checked model's folder name -> 'onnx-<name>'
            return f"{backbone}-{name}"
        if not keyed or len(str(name).split("-")) != 2:
            return name
        return f"{backbone}-{name}"

    return canon


def _variant_parts(report: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """model name -> (init, level), from the variant folders, else parsed from the name '[backbone-]<init>-<level>'."""
    parts: dict[str, tuple[str, str]] = {}
    for entry in (report.get("variants") or {}).values():
        if isinstance(entry, Mapping) and _model_name(entry):
            parts.setdefault(_model_name(entry), (str(entry.get("init") or ""), str(entry.get("level") or "")))
    canon = _canon(report)
    names = list(report.get("matrix") or {}) + [canon(n) for n in _d(report, "protocol", "variants", default=[])]
    names += [_model_name(v) for v in report.get("verdicts") or [] if isinstance(v, Mapping)]
    for name in names:
        if name and name not in parts:
            _, init, level = _split_name(name)
            parts[name] = (init, level)
    return parts


def _backbones(report: Mapping[str, Any], names) -> dict[str, str]:
    """model name -> backbone ('' where unknown)."""
    out = {}
    for entry in (report.get("variants") or {}).values():
        if isinstance(entry, Mapping) and _model_name(entry):
            out[_model_name(entry)] = str(entry.get("backbone") or "")
    for n in names:
        out.setdefault(n, _split_name(n)[0])
    return out


def _variant_key(gated: Sequence[str], parts: Mapping[str, tuple[str, str]]):
    def key(name: str) -> tuple:
        init, level = parts.get(name, ("", ""))
        return (name not in gated, _order_index(init, INIT_ORDER), _order_index(level, LEVEL_ORDER), name)

    return key


def _seed_runs(report: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """variant name -> its seed folders' entries, lowest seed first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for folder, entry in (report.get("variants") or {}).items():
        if isinstance(entry, Mapping):
            out.setdefault(_model_name(entry) or folder, []).append(
                dict(entry) | {"folder": entry.get("folder") or folder}
            )
    for runs in out.values():
        runs.sort(key=lambda e: (e.get("seed") if isinstance(e.get("seed"), int) else 1 << 30, e["folder"]))
    return out


# --- sections --------------------------------------------------------------------------------------------------


def _banner(report: Mapping[str, Any], verdicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    verdict = str(report.get("verdict") or "ERROR").upper()
    proto = report.get("protocol") or {}
    profile = proto.get("profile") or {}
    gated = [v for v in verdicts if v.get("gated")]
    count = {s: sum(1 for v in gated if v.get("status") == s) for s in ("PASS", "FAIL", "ERROR", "SKIP")}
    seeds = proto.get("seeds") if proto.get("seeds") is not None else profile.get("seeds")
    return {
        "verdict": verdict,
        "css": {"PASS": "pass", "FAIL": "fail"}.get(verdict, "grey"),
        "text": VERDICT_TEXT.get(verdict, "Unknown verdict."),
        "profile": profile.get("name") or NA,
        "backbone": profile.get("backbone") or NA,
        "image_size": profile.get("image_size"),
        "seeds": fmt_any(seeds) if seeds is not None else NA,
        "created": _date(report.get("created")),
        "gated_variants": ", ".join(
            "every model of the run" if g == "*" else g for g in report.get("gated_variants") or []
        )
        or "none",
        "n_gated": len(gated),
        "passed": count["PASS"],
        "failed": count["FAIL"],
        "errors": count["ERROR"],
        "skipped": count["SKIP"],
        "failed_list": _failed_by_subject(gated),
    }


def _failed_by_subject(gated: Sequence[Mapping[str, Any]]) -> list[str]:
    """'imagenet-all-test_easy: accuracy, soft_above_constant (evidence missing)' lines, in verdict order."""
    by: dict[str, list[str]] = {}
    for v in gated:
        if v.get("status") in ("FAIL", "ERROR"):
            by.setdefault(str(v.get("id") or v.get("variant")), []).append(
                str(v.get("criterion")) + (" (evidence missing)" if v.get("status") == "ERROR" else "")
            )
    return [f"{k}: {', '.join(c)}" for k, c in by.items()]


def _criteria(book: bool) -> dict[str, str]:
    return dict(CRITERIA) if book else CRITERIA | NEUTRAL_CRITERIA


def _verdict_rows(verdicts: Sequence[Mapping[str, Any]], book: bool = True) -> list[dict[str, Any]]:
    meanings = _criteria(book)
    rows = []
    for v in verdicts:
        crit, status, gated = str(v.get("criterion", "")), str(v.get("status", "ERROR")), bool(v.get("gated"))
        per_seed = v.get("per_seed") or {}
        vid = v.get("id") or (f"{v.get('variant')}-{v.get('subject')}" if v.get("subject") else v.get("variant"))
        rows.append(
            {
                "criterion": crit,
                "meaning": meanings.get(crit, ""),
                "id": str(vid),
                "status": status,
                "gated": gated,
                "value": fmt_value(crit, v.get("value")),
                "comparison": v.get("comparison") or "",
                "threshold": fmt_value(crit, v.get("threshold")) if v.get("threshold") is not None else "none set",
                "per_seed": " · ".join(f"{k} {fmt_value(crit, x)}" for k, x in per_seed.items())
                if len(per_seed) > 1
                else "",
                "evidence": list(v.get("evidence") or []),
                "detail": v.get("detail") or "",
                "css": ("row-fail" if status == "FAIL" else "row-error" if status == "ERROR" else "")
                if gated
                else "row-ablation",
            }
        )
    return rows


def _range_str(stats: Mapping[str, Any]) -> str:
    return f"{fmt_acc(stats.get('min'))}–{fmt_acc(stats.get('max'))}"


def _ci_str(stats: Mapping[str, Any]) -> str:
    w = stats.get("wilson_worst")
    ok = isinstance(w, (list, tuple)) and len(w) == 2 and all(_is_num(x) for x in w)
    return f"{w[0]:.2f}–{w[1]:.2f}" if ok else "n/a"


def _matrix(
    report: Mapping[str, Any],
    splits: Sequence[str],
    parts: Mapping[str, tuple[str, str]],
    gated: Sequence[str],
    runs: Mapping[str, list],
    book: bool = True,
) -> dict[str, Any]:
    matrix = report.get("matrix") or {}
    baselines = report.get("baselines") or {}
    profile = _d(report, "protocol", "profile", default={})
    canon = _canon(report)
    in_run = {canon(n) for n in _d(report, "protocol", "variants", default=[])} | set(matrix) | set(runs)
    inits = {p[0] for n, p in parts.items() if n in in_run} | set(profile.get("inits") or [])
    levels = {p[1] for n, p in parts.items() if n in in_run} | set(profile.get("levels") or [])
    inits_o = sorted(inits, key=lambda x: _order_index(x, INIT_ORDER))
    levels_o = sorted(levels, key=lambda x: _order_index(x, LEVEL_ORDER))
    backbone_of = _backbones(report, list(parts))
    backbones = sorted({backbone_of.get(n, "") for n in parts if n in in_run}) or [""]
    several = len(backbones) > 1
    by_parts = {(backbone_of.get(n, "") if several else "", *p): n for n, p in parts.items() if n in in_run}
    by_parts_any = {p: n for n, p in parts.items()}
    show_ref = book and {"test_easy", "test_difficult"} <= set(splits)
    rows = []
    for backbone, init in [(b, i) for b in (backbones if several else [""]) for i in inits_o]:
        cells = []
        for level in levels_o:
            name = by_parts.get((backbone, init, level)) or (None if several else by_parts_any.get((init, level)))
            cell: dict[str, Any] = {
                "variant": name or f"{init}-{level}",
                "gated": name in gated,
                "state": "absent",
                "css": "cell-absent",
                "note": "not in this run",
                "seeds": 0,
                "lines": [],
            }
            ref = REFERENCE_2018.get((init, level))
            cell["reference"] = (
                " / ".join(
                    fmt_acc(ref[0] if s == "test_easy" else ref[1])
                    for s in splits
                    if s in ("test_easy", "test_difficult")
                )
                if ref and show_ref
                else ""
            )
            if name is not None and name in in_run:
                per_split = matrix.get(name) or {}
                if not any(per_split.get(s) for s in splits):
                    cell.update(state="missing", css="cell-missing", note=f"{NA} (no metrics yet)")
                else:
                    lines, beats = [], True
                    seeds = 0
                    for kind in ("soft", "strict"):
                        stats = [(per_split.get(s) or {}).get(kind) or {} for s in splits]
                        seeds = max([seeds] + [len(st.get("per_seed") or {}) for st in stats])
                        lines.append(
                            {
                                "kind": kind,
                                "mean": " / ".join(fmt_acc(st.get("mean")) if st else "n/a" for st in stats),
                                "range": " / ".join(_range_str(st) if st else "n/a" for st in stats),
                                "ci": " / ".join(_ci_str(st) if st else "n/a" for st in stats),
                            }
                        )
                        for s, st in zip(splits, stats):
                            const = _d(baselines, s, f"constant_{kind}", "value")
                            if kind == "soft" and st and const is not None and st.get("min") is not None:
                                beats = beats and st["min"] > const + 1e-12
                    cell.update(
                        state="ok",
                        seeds=seeds,
                        lines=lines,
                        css="cell-good" if beats else "cell-bad",
                        note="" if beats else "not above the constant answer",
                    )
            cells.append(cell)
        label = INIT_LABELS.get(init, init)
        rows.append({"init": init, "label": f"{backbone} · {label}" if several else label, "cells": cells})
    base_rows, lines = [], []
    for s in splits:
        b = baselines.get(s)
        n = None
        for name in matrix:
            n = n or _d(matrix, name, s, "soft", "n")
        if not isinstance(b, Mapping):
            base_rows.append({"split": split_label(s), "n": fmt_any(n) if n else "n/a", "available": False})
            continue
        cs, ct = b.get("constant_soft") or {}, b.get("constant_strict") or {}
        base_rows.append(
            {
                "split": split_label(s),
                "n": str(n) if n else "n/a",
                "available": True,
                "uniform_soft": fmt_acc(b.get("uniform_soft")),
                "uniform_strict": fmt_acc(b.get("uniform_strict")),
                "constant_soft": fmt_acc(cs.get("value")),
                "constant_soft_label": cs.get("label") or "?",
                "constant_strict": fmt_acc(ct.get("value")),
                "constant_strict_label": ct.get("label") or "?",
            }
        )
        if cs.get("value") is not None:
            lines.append(
                f"always answering “{cs.get('label')}” already scores {fmt_acc(cs.get('value'))} "
                f"(soft) on the {split_label(s)} set"
            )
    return {
        "columns": [{"level": lv, "label": LEVEL_LABELS.get(lv, lv)} for lv in levels_o],
        "rows": rows,
        "splits": [split_label(s) for s in splits],
        "baselines": base_rows,
        "constant_lines": lines,
        "show_reference": show_ref and any(c["reference"] for r in rows for c in r["cells"]),
        "multi_seed": any(c["seeds"] > 1 for r in rows for c in r["cells"]),
        "seeds_text": _seeds_text([c["seeds"] for r in rows for c in r["cells"] if c["seeds"]]),
    }


def _seeds_text(counts: Sequence[int]) -> str:
    distinct = sorted(set(counts))
    if not distinct:
        return "seeds"
    return f"{distinct[0]} seeds" if len(distinct) == 1 else f"{distinct[0]}-{distinct[-1]} seeds (by variant)"


def _curves_png(runs: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Loss and accuracy per epoch, seeds overlaid (solid train, dashed validation), phase boundaries marked."""
    histories = [(r.get("seed"), [h for h in (r.get("history") or []) if isinstance(h, Mapping)]) for r in runs]
    histories = [(s, h) for s, h in histories if h]
    if not histories:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.4, 3.0), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for ax, (train_key, val_key, title) in zip(
        axes, (("loss", "val_loss", "loss"), ("accuracy", "val_accuracy", "accuracy"))
    ):
        for i, (seed, hist) in enumerate(histories):
            c = colours[i % len(colours)]
            marker = "o" if len(hist) <= 30 else None
            for key, style, what in ((train_key, "-", "train"), (val_key, "--", "validation")):
                pts = [(x, h.get(key)) for x, h in enumerate(hist, 1) if _is_num(h.get(key))]
                if pts:
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        style,
                        color=c,
                        marker=marker,
                        markersize=3,
                        linewidth=1.2,
                        label=f"s{seed} {what}",
                    )
        # phase boundaries of the first seed (the same for every seed unless a phase stopped early)
        _, hist = histories[0]
        start, phase = 1, hist[0].get("phase")
        spans = []
        for x, h in enumerate(hist[1:], 2):
            if h.get("phase") != phase:
                spans.append((start, x - 1, phase))
                start, phase = x, h.get("phase")
        spans.append((start, len(hist), phase))
        for j, (a, b, name) in enumerate(spans):
            if j:
                ax.axvline(a - 0.5, color="#555", linestyle=":", linewidth=1)
            if name:
                ax.text(
                    (a + b) / 2,
                    1.0,
                    str(name),
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color="#333",
                )
        n_epochs = max(len(h) for _, h in histories)
        if n_epochs <= 10:
            ax.set_xticks(range(1, n_epochs + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10, pad=14)
        if title == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0.5, n_epochs + 0.5)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    # compact legend: one colour per seed, solid = training split, dashed = validation split
    handles = [
        Line2D([], [], color=colours[i % len(colours)], linewidth=2, label=f"seed {seed}")
        for i, (seed, _) in enumerate(histories)
    ]
    handles += [
        Line2D([], [], color="#444", linestyle="-", label="train"),
        Line2D([], [], color="#444", linestyle="--", label="validation"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.27, top=0.85, wspace=0.25)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _curves(order: Sequence[str], runs: Mapping[str, list], gated: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for name in order:
        rs = runs.get(name) or []
        png = _curves_png(rs) if rs else None
        secs = [r.get("train_seconds") for r in rs if _is_num(r.get("train_seconds"))]
        out.append(
            {
                "variant": name,
                "gated": name in gated,
                "src": _data_uri(png) if png else None,
                "note": "" if png else f"training history {NA}",
                "seconds": ", ".join(
                    f"s{r.get('seed')} {r.get('train_seconds'):.0f} s" for r in rs if _is_num(r.get("train_seconds"))
                )
                if secs
                else "",
            }
        )
    return out


def _confusion(
    order: Sequence[str], runs: Mapping[str, list], gated: Sequence[str], splits: Sequence[str], primary_split: str
) -> list[dict[str, Any]]:
    out = []
    for name in order:
        tables = []
        for split in [primary_split] + [s for s in splits if s != primary_split]:
            mats = [(r.get("seed"), _d(r, "test_sets", split)) for r in runs.get(name) or []]
            mats = [
                (s, m) for s, m in mats if isinstance(m, Mapping) and m.get("confusion_matrix") and m.get("classes")
            ]
            if not mats:
                tables.append({"split": split_label(split), "primary": split == primary_split, "available": False})
                continue
            classes = list(mats[0][1]["classes"])
            k = len(classes)
            total = [[0] * k for _ in range(k)]
            for _, m in mats:
                cm = m["confusion_matrix"]
                if list(m["classes"]) != classes or len(cm) != k:
                    continue
                for i in range(k):
                    for j in range(k):
                        total[i][j] += int(cm[i][j])
            peak = max(max(r) for r in total) or 1
            rows = []
            for i, c in enumerate(classes):
                cells = []
                for j in range(k):
                    n = total[i][j]
                    alpha = 0.0 if n == 0 else 0.15 + 0.75 * n / peak
                    rgb = "26,127,55" if i == j else "207,34,46"
                    cells.append(
                        {
                            "n": n,
                            "diag": i == j,
                            "style": f"background: rgba({rgb},{alpha:.2f}); color: {'#fff' if alpha > 0.6 else '#111'}",
                        }
                    )
                rows.append({"label": c, "cells": cells, "total": sum(total[i])})
            diag, n_all = sum(total[i][i] for i in range(k)), sum(map(sum, total))
            tables.append(
                {
                    "split": split_label(split),
                    "primary": split == primary_split,
                    "available": True,
                    "classes": classes,
                    "rows": rows,
                    "seeds": len(mats),
                    "strict": fmt_acc(diag / n_all) if n_all else "n/a",
                    "col_totals": [sum(total[i][j] for i in range(k)) for j in range(k)],
                }
            )
        out.append({"variant": name, "gated": name in gated, "tables": tables})
    return out


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
    return _data_uri(data), ""


def _skipped_for_regions(verdicts: Sequence[Mapping[str, Any]], name: str) -> bool:
    """True when every Grad-CAM localization verdict of `name` is SKIP for want of labelled regions (and one exists)."""
    mine = [v for v in verdicts if _model_name(v) == name and v.get("criterion") in ("cam_energy", "cam_pointing")]
    return bool(mine) and all(v.get("status") == "SKIP" and "region" in str(v.get("detail") or "") for v in mine)


def _evidence_of(run: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    """A variant entry's saliency evidence: 'cam' (Grad-CAM), or a black-box method under 'saliency'."""
    if not run:
        return None
    ev = run.get("cam") if key == "cam" else _d(run, "saliency", key, default=None)
    return ev if isinstance(ev, Mapping) else None


def _chance_text(summ: Mapping[str, Any], what: str) -> str:
    c = summ.get(f"{what}_chance_mean")
    return f" (a uniform map: {fmt_acc(c)})" if _is_num(c) else ""


def _cam(
    report: Mapping[str, Any],
    run_dir: Path,
    order: Sequence[str],
    runs: Mapping[str, list],
    gated: Sequence[str],
    split: str,
    book: bool = True,
    verdicts: Sequence[Mapping[str, Any]] = (),
    key: str = "cam",
    title: str = "Grad-CAM",
) -> dict[str, Any]:
    thr = _d(report, "protocol", "thresholds", "cam" if key == "cam" else key, default={}) or {}
    firsts = {name: (runs.get(name) or [None])[0] for name in order}
    n_overlays = sum(
        1
        for r in firsts.values()
        if r
        for im in (_d(_evidence_of(r, key), "images", split, default=[]) or [])
        if isinstance(im, Mapping) and im.get("overlay_path")
    )
    embed_all = n_overlays <= MAX_EMBEDDED_OVERLAYS
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
                if _d(_evidence_of(r, key), "images", split)
            ],
        }
        ev = _evidence_of(first, key)
        images = _d(ev, "images", split, default=None)
        if images:
            group["available"] = True
            summ = _d(ev, "summary", split, default={}) or {}
            if summ.get("has_regions", True) is False:
                group["summary"].append(NO_REGIONS)
            else:
                regions = WORDS[book]["regions"]
                group["summary"].append(
                    f"energy inside {regions} {fmt_acc(summ.get('energy_share_mean'))}"
                    + _chance_text(summ, "energy")
                    + (
                        f" (threshold ≥ {fmt_acc(thr.get('energy_share_min'))})"
                        if thr.get("energy_share_min") is not None
                        else ""
                    )
                )
                group["summary"].append(
                    f"pointing-game hit rate {fmt_acc(summ.get('pointing_hit_rate'))}"
                    + _chance_text(summ, "pointing")
                    + (
                        f" (threshold ≥ {fmt_acc(thr.get('pointing_rate_min'))})"
                        if thr.get("pointing_rate_min") is not None
                        else ""
                    )
                )
                rho = _d(ev, "sanity", "spearman_mean")
                if _is_num(rho):
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
                        "probability": fmt_acc(im.get("probability")) if _is_num(im.get("probability")) else "",
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
    some = next((_evidence_of(r, key) for r in firsts.values() if _evidence_of(r, key)), None) or {}
    cost = ""
    if _is_num(some.get("seconds_per_image")):
        cost = f"{some['seconds_per_image']:.2f} s per image" + (
            f", {some['passes_per_image']:.0f} forward passes" if _is_num(some.get("passes_per_image")) else ""
        )
    return {
        "split": split_label(split),
        "groups": groups,
        "embed_all": embed_all,
        "n_overlays": n_overlays,
        "limit": MAX_EMBEDDED_OVERLAYS,
        "method": _d(some, "protocol", "method", default=""),
        "key": key,
        "title": title,
        "anchor": "cam" if key == "cam" else f"saliency-{key}",
        "cost": cost,
        "available": bool(some),
    }


AUTOML_2018 = "the 2018 comparison's AutoML model answered only when confident: 10 of 20 difficult photos right"


def _reliability_png(cal: Mapping[str, Any], sel: Mapping[str, Any], title: str) -> bytes | None:
    """Reliability diagram (accuracy vs mean confidence per bin, bar width = bin) and risk-coverage curve."""
    bins = [b for b in (cal.get("reliability") or []) if isinstance(b, Mapping)]
    points = [p for p in (sel.get("points") or []) if isinstance(p, Mapping)]
    if not bins and not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.4, 2.8), dpi=80)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    for b in bins:
        if b.get("count"):
            ax1.bar(
                (b["lo"] + b["hi"]) / 2,
                b["accuracy"],
                width=b["hi"] - b["lo"],
                color="#4c78a8",
                alpha=0.8,
                edgecolor="white",
            )
            ax1.plot([b["confidence"]], [b["accuracy"]], "o", color="#d62728", markersize=3)
    ax1.plot([0, 1], [0, 1], ":", color="#555", linewidth=1)
    ax1.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="confidence (top-1 probability)",
        ylabel="accuracy (soft)",
        title=f"reliability, ECE {cal.get('ece', 0):.3f}",
    )
    if points:
        ax2.step([p["coverage"] for p in points], [p["risk"] for p in points], where="post", color="#4c78a8")
        op = sel.get("operating_point")
        if isinstance(op, Mapping):
            ax2.plot(
                [op["coverage"]],
                [1 - op["accuracy"]],
                "o",
                color="#2ca02c",
                markersize=5,
                label=f"operating point ({sel.get('target', 0.95):.0%} accuracy)",
            )
            ax2.legend(fontsize=7, loc="upper left")
    ax2.set(
        xlim=(0, 1.02),
        ylim=(0, max(0.05, max((p["risk"] for p in points), default=0) * 1.1)),
        xlabel="coverage (share answered)",
        ylabel="risk (soft errors)",
        title=f"risk-coverage, AURC {sel.get('aurc', 0):.3f}",
    )
    for ax in (ax1, ax2):
        ax.tick_params(labelsize=7)
        ax.title.set_fontsize(9)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _evidence_view(report: Mapping[str, Any], order: Sequence[str], gated: Sequence[str], book: bool) -> dict[str, Any]:
    """Paired tests, binomial tests against the constant answer, calibration and selective prediction."""
    from harness.report.evidence import operating_text

    ev = report.get("evidence") if isinstance(report.get("evidence"), Mapping) else {}
    paired = [p for p in ev.get("paired") or [] if isinstance(p, Mapping)]
    binomial = [b for b in ev.get("binomial") or [] if isinstance(b, Mapping)]
    cal, sel = ev.get("calibration") or {}, ev.get("selective") or {}
    rows = []
    for name in order:
        for split in sorted(set(cal.get(name) or {}) | set(sel.get(name) or {})):
            c, s_ = (cal.get(name) or {}).get(split) or {}, (sel.get(name) or {}).get(split) or {}
            bino = {b["kind"]: b for b in binomial if b.get("model") == name and b.get("split") == split}
            png = _reliability_png(c, s_, f"{name}, {split_label(split)}") if name in gated else None
            rows.append(
                {
                    "model": name,
                    "split": split_label(split),
                    "gated": name in gated,
                    "p_soft": f"{bino['soft']['p']:.2g}" if "soft" in bino else "-",
                    "p_strict": f"{bino['strict']['p']:.2g}" if "strict" in bino else "-",
                    "ece": f"{c['ece']:.3f}" if _is_num(c.get("ece")) else "-",
                    "aurc": f"{s_['aurc']:.3f}" if _is_num(s_.get("aurc")) else "-",
                    "operating": operating_text(
                        s_.get("operating_point"), int(s_.get("n") or 0), float(s_.get("target") or 0.95)
                    )
                    if s_
                    else "-",
                    "src": _data_uri(png) if png else None,
                }
            )
    return {
        "lines": [p["line"] for p in paired],
        "rows": rows,
        "automl": AUTOML_2018 if book else "",
        "target": (ev.get("protocol") or {}).get("selective_target"),
    }


def _localization_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """report.json's localization table (every figure beside a uniform map's chance level), formatted."""
    names = {k: t for k, t, _ in SALIENCY_SECTIONS}
    rows = []
    for r in report.get("localization") or []:
        if not isinstance(r, Mapping):
            continue
        rows.append(
            {
                "model": r.get("model"),
                "method": names.get(r.get("method"), r.get("method")),
                "split": split_label(r.get("split") or "") if r.get("split") else "-",
                "gated": bool(r.get("gated")),
                "energy": fmt_acc(r.get("energy")) if _is_num(r.get("energy")) else NA,
                "energy_chance": fmt_acc(r.get("energy_chance")) if _is_num(r.get("energy_chance")) else NA,
                "energy_status": r.get("energy_status") or "",
                "pointing": fmt_acc(r.get("pointing")) if _is_num(r.get("pointing")) else NA,
                "pointing_chance": fmt_acc(r.get("pointing_chance")) if _is_num(r.get("pointing_chance")) else NA,
                "pointing_status": r.get("pointing_status") or "",
                "sanity": f"{r['sanity_spearman']:.2f}" if _is_num(r.get("sanity_spearman")) else "-",
                "sanity_status": r.get("sanity_status") or "",
                "note": r.get("energy_detail") or r.get("pointing_detail") or "",
            }
        )
    return rows


def _cuda_parity(cuda: Any) -> str:
    if not isinstance(cuda, Mapping) or not cuda:
        return "-"
    if cuda.get("skipped"):
        return f"skipped: {cuda['skipped']}"
    if "passed" in cuda:
        diff = f" (max abs {cuda['max_abs']:.1e})" if _is_num(cuda.get("max_abs")) else ""
        return ("passed" if cuda["passed"] else "FAILED") + diff
    return fmt_any(cuda)


def _export(order: Sequence[str], runs: Mapping[str, list]) -> dict[str, Any]:
    parity, latency, batches = [], [], []
    for name in order:
        for r in runs.get(name) or []:
            ex = r.get("export")
            if isinstance(ex, Mapping):
                cuda_txt = _cuda_parity(ex.get("cuda"))
                parity.append(
                    {
                        "folder": r["folder"],
                        "available": True,
                        "exporter": ex.get("exporter") or "?",
                        "opset": ex.get("opset") if ex.get("opset") is not None else "?",
                        "size": f"{ex['bytes'] / 1e6:.1f} MB" if _is_num(ex.get("bytes")) else "n/a",
                        "max_abs": f"{ex['max_abs']:.1e}" if _is_num(ex.get("max_abs")) else "n/a",
                        "max_rel": f"{ex['max_rel']:.1e}" if _is_num(ex.get("max_rel")) else "n/a",
                        "tolerance": f"atol {fmt_any(ex.get('atol'))}, rtol {fmt_any(ex.get('rtol'))}",
                        "passed": ex.get("parity_passed"),
                        "cuda": cuda_txt,
                    }
                )
            else:
                parity.append({"folder": r["folder"], "available": False})
            by = _d(r, "latency", "by_provider", default={})
            if not by:
                latency.append({"folder": r["folder"], "available": False})
                continue
            for provider, per_batch in by.items():
                cells = {}
                for b, rec in (per_batch or {}).items():
                    if isinstance(rec, Mapping) and _is_num(rec.get("median_ms")):
                        if str(b) not in batches:
                            batches.append(str(b))
                        p90 = f", p90 {rec['p90_ms']:.1f}" if _is_num(rec.get("p90_ms")) else ""
                        ips = f"; {rec['throughput_ips']:.0f} img/s" if _is_num(rec.get("throughput_ips")) else ""
                        cells[str(b)] = f"{fmt_ms(rec['median_ms'])} (median{p90}{ips})"
                latency.append({"folder": r["folder"], "available": True, "provider": provider, "cells": cells})
    batches.sort(key=lambda b: (not b.isdigit(), int(b) if b.isdigit() else 0, b))
    return {"parity": parity, "latency": latency, "batches": batches}


def _protocol(report: Mapping[str, Any]) -> dict[str, Any]:
    proto = report.get("protocol") or {}
    profile = proto.get("profile") or {}
    thr = proto.get("thresholds") or {}
    phases = []
    for init, plist in (profile.get("phases") or {}).items():
        for p in plist or []:
            if isinstance(p, Mapping):
                phases.append(
                    {
                        "init": init,
                        "name": p.get("name", "?"),
                        "epochs": fmt_any(p.get("epochs")),
                        "optimizer": fmt_any(p.get("optimizer")),
                        "lr": fmt_any(p.get("lr")),
                        "weight_decay": fmt_any(p.get("weight_decay")),
                        "schedule": fmt_any(p.get("schedule")),
                        "train_from": fmt_any(p.get("train_from")),
                    }
                )
    skip = {"phases", "augment", "thresholds", "name", "seeds", "source"}
    settings = [(k, fmt_any(v)) for k, v in profile.items() if k not in skip]
    acc_rows = []
    for split, rule in (thr.get("accuracy") or {}).items():
        rule = rule or {}
        acc_rows.append(
            {
                "split": split_label(split),
                "soft_min": fmt_any(rule.get("soft_min")),
                "soft_margin": fmt_any(rule.get("soft_margin")),
                "wilson_lower_min": fmt_any(rule.get("wilson_lower_min")),
                "strict_above_constant": fmt_any(rule.get("strict_above_constant")),
            }
        )
    cam = thr.get("cam") or {}
    other_thr = [
        ("gated variants", fmt_any(thr.get("gated"))),
        (
            "seed aggregate",
            fmt_any(thr.get("seed_aggregate"))
            + (" (the worst seed must pass)" if thr.get("seed_aggregate") == "worst" else ""),
        ),
        ("CAM test set", split_label(str(cam.get("split") or "-"))),
        ("CAM energy share ≥", fmt_any(cam.get("energy_share_min"))),
        ("CAM pointing rate ≥", fmt_any(cam.get("pointing_rate_min"))),
        ("ONNX parity", f"atol {fmt_any(thr.get('parity_atol'))}, rtol {fmt_any(thr.get('parity_rtol'))}"),
        (
            f"latency at batch {fmt_any(thr.get('latency_batch'))} ≤",
            fmt_ms(thr.get("latency_max_ms")) if thr.get("latency_max_ms") is not None else "none set",
        ),
        ("source", fmt_any(thr.get("source"))),
    ]
    exporter = proto.get("exporter") or {}
    return {
        "profile": profile.get("name") or NA,
        "source": profile.get("source") or "",
        "image_size": fmt_any(profile.get("image_size")),
        "batch_size": fmt_any(profile.get("batch_size")),
        "settings": settings,
        "phases": phases,
        "augment": [(k, fmt_any(v)) for k, v in (profile.get("augment") or {}).items()],
        "levels": [(lv, LEVEL_MEANING.get(lv, "")) for lv in profile.get("levels") or []],
        "seeds": fmt_any(proto.get("seeds") if proto.get("seeds") is not None else profile.get("seeds")),
        "variants": fmt_any(proto.get("variants")),
        "accuracy_rules": acc_rows,
        "thresholds": other_thr,
        "calibration": thr.get("calibration") or "",
        "exporter": (
            f"{exporter.get('default', '?')} (available: {fmt_any(exporter.get('available'))}), "
            f"opset {fmt_any(exporter.get('opset'))}"
        )
        if exporter
        else NA,
        "providers": fmt_any(proto.get("onnxruntime_providers")),
        "versions": [(k, fmt_any(v)) for k, v in (proto.get("versions") or {}).items()],
        "device": fmt_any(proto.get("device")),
        "data_root": fmt_any(proto.get("data_root")),
        "weights_file": fmt_any(proto.get("weights_file")),
        "run_dir": fmt_any(report.get("run_dir")),
        "argv": " ".join(str(a) for a in proto.get("argv") or []) or "-",
    }


# --- entry point -----------------------------------------------------------------------------------------------


def template_env() -> jinja2.Environment:
    """The jinja2 environment of harness/report/templates (report.html, compare.html)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def context(report: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """The template's view model: every string formatted, every missing piece marked."""
    run_dir = Path(run_dir)
    verdicts = [v for v in report.get("verdicts") or [] if isinstance(v, Mapping)]
    canon = _canon(report)
    gated = [canon(g) for g in report.get("gated_variants") or [] if g != "*"]
    gated += sorted({_model_name(v) for v in verdicts if v.get("gated") and _model_name(v)} - set(gated))
    parts = _variant_parts(report)
    runs = _seed_runs(report)
    names = (
        set(runs) | set(report.get("matrix") or {}) | {canon(n) for n in _d(report, "protocol", "variants", default=[])}
    )
    names |= {_model_name(v) for v in verdicts if _model_name(v)}
    order = sorted(names, key=_variant_key(gated, parts))
    splits = list(_d(report, "protocol", "profile", "test_sets", default=[]) or [])
    for name in report.get("matrix") or {}:
        splits += [s for s in (report["matrix"][name] or {}) if s not in splits]
    cam_split = _d(report, "protocol", "thresholds", "cam", "split", default=None) or (
        "test_difficult" if "test_difficult" in splits else (splits[-1] if splits else "test_difficult")
    )
    primary = "test_difficult" if "test_difficult" in splits else (splits[-1] if splits else "test_difficult")
    book = is_book_dataset(report)
    return {
        "banner": _banner(report, verdicts),
        "verdicts": _verdict_rows(verdicts, book),
        "criteria": [(k, v) for k, v in _criteria(book).items() if any(r.get("criterion") == k for r in verdicts)],
        "matrix": _matrix(report, splits, parts, gated, runs, book),
        "curves": _curves(order, runs, gated),
        "confusion": _confusion(order, runs, gated, splits, primary),
        "confusion_split": split_label(primary),
        "cam": _cam(report, run_dir, order, runs, gated, cam_split, book, verdicts),
        "blackbox": [
            sec
            for key, title, thr_key in SALIENCY_SECTIONS[1:]
            for sec in [
                _cam(
                    report,
                    run_dir,
                    order,
                    runs,
                    gated,
                    _d(report, "protocol", "thresholds", thr_key, "split", default=None) or cam_split,
                    book,
                    verdicts,
                    key,
                    title,
                )
            ]
            if sec["available"]
        ],
        "localization": _localization_rows(report),
        "evidence": _evidence_view(report, order, gated, book),
        "notes": [str(n) for n in report.get("thresholds_notes") or []],
        "failed_jobs": [
            {
                "id": str(j.get("id")),
                "variant": str(j.get("variant")),
                "seed": j.get("seed"),
                "error": str(j.get("error") or "no error recorded"),
                "host": str(j.get("host") or ""),
            }
            for j in report.get("failed_jobs") or []
            if isinstance(j, Mapping)
        ],
        "is_check": _d(report, "protocol", "kind", default="") == "check",
        "export": _export(order, runs),
        "judged": [
            {"model": m, "sets": [{"split": split_label(k), "criteria": ", ".join(c)} for k, c in t.items()]}
            for m, t in (report.get("judged") or {}).items()
            if isinstance(t, Mapping)
        ],
        "protocol": _protocol(report),
        "words": WORDS[book],
        "NA": NA,
    }


def render_html(report: Mapping[str, Any], run_dir: Path) -> str:
    """One self-contained HTML page for the business owner: verdict first, then the evidence, then the protocol."""
    return template_env().get_template("report.html").render(**context(report, Path(run_dir)))
