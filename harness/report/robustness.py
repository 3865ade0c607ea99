"""The report's robustness section (template robustness.html): accuracy against severity per corruption, one line per
model; the table of accuracy under each corruption at the judged severity; the photos whose answer flipped, clean
and corrupted side by side; object masking against its random control; and the faithfulness AUCs beside a random
map's (also shown in the "against chance" localization table: `faithfulness_cells`). Everything from report.json's
`robustness` section (harness.robustness.summary), averaged over seeds where a model has several."""

from __future__ import annotations

import io
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.report.format import NA, data_uri, dig, fmt_acc, fmt_num, is_num, split_label
from harness.report.models import order_index

MAX_FLIPS = 24  # thumbnails embedded (gated models first); the others are listed by name
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]


def _mean(values: Sequence[Any]) -> float | None:
    nums = [float(v) for v in values if is_num(v)]
    return statistics.fmean(nums) if nums else None


def _css(status: Any) -> str:
    return "ok" if status == "PASS" else "bad" if status in ("FAIL", "ERROR") else ""


def _signed(v: float) -> str:
    """A change of accuracy: '-0.15', '+0.05', '0.00'."""
    return "0.00" if abs(v) < 1e-12 else ("+" if v > 0 else "-") + fmt_num(abs(v))


def _p(v: Any) -> str:
    return "n/a" if not is_num(v) else (f"{v:.2g}" if v < 0.01 else f"{v:.2f}")


def _interval(iv: Any) -> str:
    return f"[{fmt_num(iv[0])}, {fmt_num(iv[1])}]" if isinstance(iv, list) and len(iv) == 2 else ""


def _grouped(rows: Sequence[Mapping[str, Any]], *keys: str) -> dict[tuple, list[Mapping[str, Any]]]:
    out: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        if isinstance(r, Mapping):
            out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def severity_png(lines: Mapping[str, Mapping[str, list[tuple[int, float]]]], titles: Mapping[str, str]) -> bytes:
    """Small multiples, one per corruption: soft accuracy against severity (0 = clean), one line per model."""
    names = list(titles)
    cols = min(4, max(1, len(names)))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.0 * rows + 0.6), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        for j, per in enumerate(lines.values()):
            pts = sorted(per.get(names[i]) or [])
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=COLOURS[j % len(COLOURS)], markersize=3)
        ax.set_title(titles[names[i]], fontsize=9)
        ax.set(xlim=(-0.3, 5.3), ylim=(-0.03, 1.03))
        ax.set_xticks(range(6))
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    handles = [
        Line2D([], [], color=COLOURS[j % len(COLOURS)], marker="o", markersize=3, label=model)
        for j, model in enumerate(lines)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(3, max(1, len(handles))), fontsize=8, frameon=False)
    fig.supxlabel("severity (0 = clean)", fontsize=8, y=0.13 if rows == 1 else 0.07)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.3 if rows == 1 else 0.16, hspace=0.55, wspace=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _thumb(run_dir: Path, rel: str | None) -> str | None:
    if not rel:
        return None
    try:
        data = (run_dir / rel).read_bytes()
    except OSError:
        return None
    return data_uri(data) if data.startswith(b"\x89PNG") else None


def robustness_view(
    report: Mapping[str, Any], run_dir: Path, order: Sequence[str], gated: Sequence[str]
) -> dict[str, Any]:
    """The template's view of report.json's robustness section (available False when there is none)."""
    raw = report.get("robustness")
    sec: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    corr = [r for r in sec.get("corruption") or [] if isinstance(r, Mapping)]
    masking = [r for r in sec.get("masking") or [] if isinstance(r, Mapping)]
    faith = [r for r in sec.get("faithfulness") or [] if isinstance(r, Mapping)]
    titles = {n: str((c or {}).get("title") or n) for n, c in (sec.get("corruptions") or {}).items()}
    titles |= {str(r.get("corruption")): str(r.get("corruption")) for r in corr if r.get("corruption") not in titles}
    rank = {m: order_index(m, order) for m in {str(r.get("model")) for r in corr + masking + faith}}
    models = sorted(rank, key=lambda m: (m not in gated, rank[m]))
    splits = list(dict.fromkeys(str(r.get("split")) for r in corr))
    split = "test_difficult" if "test_difficult" in splits else (splits[-1] if splits else "")
    severities = [int(s) for s in sec.get("severities") or [] if is_num(s)]
    max_sev = dig(report, "protocol", "thresholds", "robustness", "max_severity", default=1)
    judged = max_sev if max_sev in severities else (severities[0] if severities else 1)
    cells = _grouped(corr, "model", "split", "corruption", "severity")

    lines: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for m in models:
        per = lines.setdefault(m, {})
        for c in titles:
            pts: list[tuple[int, float]] = []
            for s in severities:
                got = cells.get((m, split, c, s)) or []
                if got:
                    if not pts:
                        pts.append((0, _mean([r.get("clean_soft") for r in got]) or 0.0))
                    pts.append((s, _mean([r.get("soft") for r in got]) or 0.0))
            per[c] = pts
    figure = data_uri(severity_png(lines, titles)) if corr and titles else None

    table = []
    for m in models:
        for sp in splits:
            row_cells = []
            for c in titles:
                got = cells.get((m, sp, c, judged)) or []
                acc, drop = _mean([r.get("soft") for r in got]), _mean([r.get("drop") for r in got])
                status = got[0].get("status") if got else None
                text = f"{fmt_acc(acc)} ({_signed(-(drop or 0.0))})" if got else NA
                row_cells.append({"text": text, "css": _css(status), "status": status or ""})
            clean = [r.get("clean_soft") for k, rs in cells.items() if k[0] == m and k[1] == sp for r in rs]
            if any(c["text"] != NA for c in row_cells):
                table.append(
                    {
                        "model": m,
                        "gated": m in gated,
                        "split": split_label(sp),
                        "clean": fmt_acc(_mean(clean)),
                        "cells": row_cells,
                    }
                )

    flips: list[dict[str, Any]] = []
    n_flips = 0
    for m in models:
        for r in sorted(  # the mildest severities first, corruptions in the registry's order
            (r for r in corr if r.get("model") == m),
            key=lambda r: (
                r.get("severity") or 0,
                r.get("seed") or 0,
                list(titles).index(str(r.get("corruption"))) if r.get("corruption") in titles else 99,
                str(r.get("split")),
            ),
        ):
            for direction, names in (
                ("right → wrong", r.get("right_to_wrong")),
                ("wrong → right", r.get("wrong_to_right")),
            ):
                for name in names or []:
                    n_flips += 1
                    if len(flips) >= MAX_FLIPS:
                        continue
                    flips.append(
                        {
                            "model": m,
                            "seed": r.get("seed"),
                            "image": Path(str(name)).name,
                            "split": split_label(str(r.get("split"))),
                            "corruption": titles.get(str(r.get("corruption")), r.get("corruption")),
                            "severity": r.get("severity"),
                            "direction": direction,
                            "src": _thumb(run_dir, (r.get("thumbs") or {}).get(str(name))),
                        }
                    )

    mask_rows = []
    for (m, sp), rs in sorted(
        _grouped(masking, "model", "split").items(),
        key=lambda kv: (models.index(kv[0][0]) if kv[0][0] in models else 99, str(kv[0][1])),
    ):
        f = {
            k: _mean([r.get(k) for r in rs])
            for k in ("object_lost", "random_lost", "random_majority_lost", "difference", "kept", "overlap")
        }
        mask_rows.append(
            {
                "model": m,
                "gated": m in gated,
                "split": split_label(str(sp)),
                "n": rs[0].get("n"),
                **{k: fmt_acc(v) for k, v in f.items()},
                "interval": _interval(rs[0].get("difference_interval")),
                "p": _p(rs[0].get("mcnemar_p")),
                "status": rs[0].get("status") or "",
                "css": _css(rs[0].get("status")),
            }
        )

    faith_rows = []
    for (m, method, sp), rs in _grouped(faith, "model", "method", "split").items():
        f = {
            k: _mean([r.get(k) for r in rs])
            for k in ("deletion", "deletion_random", "insertion", "insertion_random", "margin")
        }
        faith_rows.append(
            {
                "model": m,
                "gated": m in gated,
                "method": method,
                "split": split_label(str(sp)),
                "n": rs[0].get("n"),
                **{k: (f"{v:.3f}" if v is not None else NA) for k, v in f.items()},
                "p": _p(rs[0].get("sign_test_p")),
                "note": rs[0].get("skipped") or "",
                "status": rs[0].get("status") or "",
                "css": _css(rs[0].get("status")),
            }
        )

    return {
        "available": bool(corr or masking or faith),
        "figure": figure,
        "split": split_label(split),
        "severities": ", ".join(str(s) for s in severities) or NA,
        "judged": judged,
        "titles": list(titles.values()),
        "table": table,
        "flips": flips,
        "n_flips": n_flips,
        "max_flips": MAX_FLIPS,
        "masking": mask_rows,
        "faithfulness": faith_rows,
        "problems": [f"{k}: {v}" for k, v in (sec.get("problems") or {}).items()],
    }


def faithfulness_cells(report: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, str]:
    """Deletion and insertion AUC (random map's in brackets) of one localization-table row (model, method, split),
    mean over seeds; "-" where there are none."""
    rows = [
        r
        for r in dig(report, "robustness", "faithfulness", default=[]) or []
        if isinstance(r, Mapping)
        and r.get("model") == row.get("model")
        and r.get("method") == row.get("method")
        and r.get("split") == row.get("split")
        and r.get("n")
    ]
    d, dr = _mean([r.get("deletion") for r in rows]), _mean([r.get("deletion_random") for r in rows])
    i, ir = _mean([r.get("insertion") for r in rows]), _mean([r.get("insertion_random") for r in rows])
    return {
        "deletion": f"{d:.3f} ({dr:.3f})" if d is not None and dr is not None else "-",
        "insertion": f"{i:.3f} ({ir:.3f})" if i is not None and ir is not None else "-",
    }
