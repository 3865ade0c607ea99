"""The report's sections as view models of plain strings: verdict banner and table, accuracy matrix, training curves,
confusion matrices, the strength of the evidence, ONNX export and latency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.report.evidence import operating_text
from harness.report.figures import curves_png, reliability_png
from harness.report.format import (
    NA,
    data_uri,
    dig,
    fmt_acc,
    fmt_any,
    fmt_date,
    fmt_ms,
    fmt_value,
    is_num,
    split_label,
)
from harness.report.models import Identity, order_index
from harness.report.wording import (
    AUTOML_2018,
    INIT_LABELS,
    INIT_ORDER,
    LEVEL_LABELS,
    LEVEL_ORDER,
    REFERENCE_2018,
    VERDICT_TEXT,
    criteria_meanings,
)


def banner(report: Mapping[str, Any], verdicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
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
        "created": fmt_date(report.get("created")),
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


def verdict_rows(verdicts: Sequence[Mapping[str, Any]], book: bool = True) -> list[dict[str, Any]]:
    meanings = criteria_meanings(book)
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
    if isinstance(w, (list, tuple)) and len(w) == 2 and all(is_num(x) for x in w):
        return f"{w[0]:.2f}–{w[1]:.2f}"
    return "n/a"


def accuracy_matrix(
    report: Mapping[str, Any],
    splits: Sequence[str],
    ids: Mapping[str, Identity],
    in_run: set[str],
    gated: Sequence[str],
    book: bool = True,
) -> dict[str, Any]:
    """Rows: weight initialisation (per backbone when the run has several); columns: augmentation level; each cell a
    model's soft and strict accuracy over the seeds, placed by its identity's fields."""
    matrix = report.get("matrix") or {}
    baselines = report.get("baselines") or {}
    profile = dig(report, "protocol", "profile", default={})
    inits = {i.init for n, i in ids.items() if n in in_run} | set(profile.get("inits") or [])
    levels = {i.level for n, i in ids.items() if n in in_run} | set(profile.get("levels") or [])
    inits_o = sorted(inits, key=lambda x: order_index(x, INIT_ORDER))
    levels_o = sorted(levels, key=lambda x: order_index(x, LEVEL_ORDER))
    backbones = sorted({i.backbone for n, i in ids.items() if n in in_run}) or [""]
    several = len(backbones) > 1
    by_parts = {(i.backbone if several else "", *i.parts): n for n, i in ids.items() if n in in_run}
    by_parts_any = {i.parts: n for n, i in ids.items()}
    show_ref = book and {"test_easy", "test_difficult"} <= set(splits)
    rows: list[dict[str, Any]] = []
    for backbone, init in [(b, i) for b in (backbones if several else [""]) for i in inits_o]:
        cells: list[dict[str, Any]] = []
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
                            const = dig(baselines, s, f"constant_{kind}", "value")
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
    base_rows: list[dict[str, Any]] = []
    constant_lines: list[str] = []
    for s in splits:
        b = baselines.get(s)
        n = None
        for name in matrix:
            n = n or dig(matrix, name, s, "soft", "n")
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
            constant_lines.append(
                f"always answering “{cs.get('label')}” already scores {fmt_acc(cs.get('value'))} "
                f"(soft) on the {split_label(s)} set"
            )
    return {
        "columns": [{"level": lv, "label": LEVEL_LABELS.get(lv, lv)} for lv in levels_o],
        "rows": rows,
        "splits": [split_label(s) for s in splits],
        "baselines": base_rows,
        "constant_lines": constant_lines,
        "show_reference": show_ref and any(c["reference"] for r in rows for c in r["cells"]),
        "multi_seed": any(c["seeds"] > 1 for r in rows for c in r["cells"]),
        "seeds_text": _seeds_text([c["seeds"] for r in rows for c in r["cells"] if c["seeds"]]),
    }


def _seeds_text(counts: Sequence[int]) -> str:
    distinct = sorted(set(counts))
    if not distinct:
        return "seeds"
    return f"{distinct[0]} seeds" if len(distinct) == 1 else f"{distinct[0]}-{distinct[-1]} seeds (by variant)"


def curves(order: Sequence[str], runs: Mapping[str, list], gated: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for name in order:
        rs = runs.get(name) or []
        png = curves_png(rs) if rs else None
        secs = [r.get("train_seconds") for r in rs if is_num(r.get("train_seconds"))]
        out.append(
            {
                "variant": name,
                "gated": name in gated,
                "src": data_uri(png) if png else None,
                "note": "" if png else f"training history {NA}",
                "seconds": ", ".join(
                    f"s{r.get('seed')} {r.get('train_seconds'):.0f} s" for r in rs if is_num(r.get("train_seconds"))
                )
                if secs
                else "",
            }
        )
    return out


def confusion(
    order: Sequence[str], runs: Mapping[str, list], gated: Sequence[str], splits: Sequence[str], primary_split: str
) -> list[dict[str, Any]]:
    out = []
    for name in order:
        tables = []
        for split in [primary_split] + [s for s in splits if s != primary_split]:
            mats = [(r.get("seed"), dig(r, "test_sets", split)) for r in runs.get(name) or []]
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


def evidence_view(report: Mapping[str, Any], order: Sequence[str], gated: Sequence[str], book: bool) -> dict[str, Any]:
    """Paired tests, binomial tests against the constant answer, calibration and selective prediction."""
    raw = report.get("evidence")
    ev: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    paired = [p for p in ev.get("paired") or [] if isinstance(p, Mapping)]
    binomial = [b for b in ev.get("binomial") or [] if isinstance(b, Mapping)]
    cal, sel = ev.get("calibration") or {}, ev.get("selective") or {}
    rows = []
    for name in order:
        for split in sorted(set(cal.get(name) or {}) | set(sel.get(name) or {})):
            c, s_ = (cal.get(name) or {}).get(split) or {}, (sel.get(name) or {}).get(split) or {}
            bino = {b["kind"]: b for b in binomial if b.get("model") == name and b.get("split") == split}
            png = reliability_png(c, s_, f"{name}, {split_label(split)}") if name in gated else None
            rows.append(
                {
                    "model": name,
                    "split": split_label(split),
                    "gated": name in gated,
                    "p_soft": f"{bino['soft']['p']:.2g}" if "soft" in bino else "-",
                    "p_strict": f"{bino['strict']['p']:.2g}" if "strict" in bino else "-",
                    "ece": f"{c['ece']:.3f}" if is_num(c.get("ece")) else "-",
                    "aurc": f"{s_['aurc']:.3f}" if is_num(s_.get("aurc")) else "-",
                    "operating": operating_text(
                        s_.get("operating_point"), int(s_.get("n") or 0), float(s_.get("target") or 0.95)
                    )
                    if s_
                    else "-",
                    "src": data_uri(png) if png else None,
                }
            )
    return {
        "lines": [p["line"] for p in paired],
        "rows": rows,
        "automl": AUTOML_2018 if book else "",
        "target": (ev.get("protocol") or {}).get("selective_target"),
    }


def _cuda_parity(cuda: Any) -> str:
    if not isinstance(cuda, Mapping) or not cuda:
        return "-"
    if cuda.get("skipped"):
        return f"skipped: {cuda['skipped']}"
    if "passed" in cuda:
        diff = f" (max abs {cuda['max_abs']:.1e})" if is_num(cuda.get("max_abs")) else ""
        return ("passed" if cuda["passed"] else "FAILED") + diff
    return fmt_any(cuda)


def export(order: Sequence[str], runs: Mapping[str, list]) -> dict[str, Any]:
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
                        "size": f"{ex['bytes'] / 1e6:.1f} MB" if is_num(ex.get("bytes")) else "n/a",
                        "max_abs": f"{ex['max_abs']:.1e}" if is_num(ex.get("max_abs")) else "n/a",
                        "max_rel": f"{ex['max_rel']:.1e}" if is_num(ex.get("max_rel")) else "n/a",
                        "tolerance": f"atol {fmt_any(ex.get('atol'))}, rtol {fmt_any(ex.get('rtol'))}",
                        "passed": ex.get("parity_passed"),
                        "cuda": cuda_txt,
                    }
                )
            else:
                parity.append({"folder": r["folder"], "available": False})
            by = dig(r, "latency", "by_provider", default={})
            if not by:
                latency.append({"folder": r["folder"], "available": False})
                continue
            for provider, per_batch in by.items():
                cells = {}
                for b, rec in (per_batch or {}).items():
                    if isinstance(rec, Mapping) and is_num(rec.get("median_ms")):
                        if str(b) not in batches:
                            batches.append(str(b))
                        p90 = f", p90 {rec['p90_ms']:.1f}" if is_num(rec.get("p90_ms")) else ""
                        ips = f"; {rec['throughput_ips']:.0f} img/s" if is_num(rec.get("throughput_ips")) else ""
                        cells[str(b)] = f"{fmt_ms(rec['median_ms'])} (median{p90}{ips})"
                latency.append({"folder": r["folder"], "available": True, "provider": provider, "cells": cells})
    batches.sort(key=lambda b: (not b.isdigit(), int(b) if b.isdigit() else 0, b))
    return {"parity": parity, "latency": latency, "batches": batches}
