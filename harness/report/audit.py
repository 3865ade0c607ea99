"""The report's section "Can the test sets be trusted?": report.json's `audit` (harness.audit.statements) as a view
model of plain strings: per test set the statement of what it measures and its figures beside the training set's
own reference, a strip plot of every set's nearest-training similarities, near copies and label suspects with their
thumbnails side by side (JPEG data URIs read from the run directory), duplicates within a set, the health lines."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.report.format import NA, data_uri, is_num

MAX_PAIRS = 12  # near copies shown with thumbnails per test set (the rest listed by name)


def _thumb(run_dir: Path, rel: Any) -> str | None:
    """A thumbnail of the audit as a data URI (None when absent or outside the run directory)."""
    if not isinstance(rel, str) or not rel:
        return None
    path = (run_dir / rel).resolve()
    if not path.is_relative_to(run_dir.resolve()) or not path.is_file():
        return None
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _num(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if is_num(v) else NA


def _spread(s: Any) -> str:
    if not isinstance(s, Mapping) or not is_num(s.get("median")):
        return NA
    return f"{s['median']:.2f} ({_num(s.get('min'))}–{_num(s.get('max'))})"


def strip_png(audit: Mapping[str, Any]) -> bytes | None:
    """Each set's nearest-training similarities as dots on one axis, the training set's own leave-one-out values on
    the first row and the near-copy level as a vertical line."""
    rows: list[tuple[str, list[float]]] = []
    train = [v for v in (audit.get("reference") or {}).get("values") or [] if is_num(v)]
    if train:
        rows.append(("train (leave-one-out)", train))
    for split, s in (audit.get("sets") or {}).items():
        sims = [
            r["nearest_train"]["similarity"]
            for r in s.get("per_image") or []
            if isinstance(r, Mapping) and isinstance(r.get("nearest_train"), Mapping)
        ]
        if sims:
            rows.append((str(split), sims))
    if not rows:
        return None
    fig = Figure(figsize=(7.4, 0.55 * len(rows) + 0.9), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for y, (name, values) in enumerate(reversed(rows)):
        jitter = [((k * 37) % 11 - 5) * 0.025 for k in range(len(values))]
        colour = "#6e7781" if name.startswith("train") else "#0969da"
        ax.scatter(values, [y + j for j in jitter], s=14, color=colour, alpha=0.8)
    level = (audit.get("reference") or {}).get("level")
    if isinstance(level, (int, float)) and is_num(level):
        ax.axvline(level, color="#cf222e", linestyle="--", linewidth=1)
        ax.text(level, len(rows) - 0.4, " near-copy level", color="#cf222e", fontsize=8, va="bottom")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([n for n, _ in reversed(rows)], fontsize=9)
    ax.set_ylim(-0.6, len(rows) - 0.1)
    ax.set_xlabel("cosine similarity to the nearest training image (frozen ImageNet features)", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def audit_section(report: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """The section's view model ({'available': False, 'problem': ...} when the report has no usable audit)."""
    audit = report.get("audit")
    if not isinstance(audit, Mapping) or not audit.get("available"):
        problem = audit.get("problem") if isinstance(audit, Mapping) else "this report was made without a data audit"
        return {"available": False, "problem": str(problem or NA)}
    run_dir = Path(run_dir)
    item = str(audit.get("item") or "image")
    ref = audit.get("reference") or {}
    sets = []
    for split, s in (audit.get("sets") or {}).items():
        near = [c for c in s.get("near_copies") or [] if isinstance(c, Mapping)]
        sets.append(
            {
                "split": str(split),
                "statement": str(s.get("statement") or ""),
                "kind": str(s.get("kind") or ""),
                "n": s.get("n"),
                "similarity": _spread(s.get("similarity")),
                "hash_distance": _spread(s.get("hash_distance")).replace(".00", ""),
                "near": len(near),
                "share": f"{s['near_copy_share']:.0%}" if is_num(s.get("near_copy_share")) else NA,
                "gated": bool(s.get("gated")),
                "pairs": [
                    {
                        "image": str(c.get("image")),
                        "source": str(c.get("source")),
                        "how": str(c.get("how")),
                        "similarity": _num(c.get("similarity"), 3),
                        "a": _thumb(run_dir, c.get("thumb")),
                        "b": _thumb(run_dir, c.get("source_thumb")),
                    }
                    for c in near[:MAX_PAIRS]
                ],
                "more": [str(c.get("image")) for c in near[MAX_PAIRS:]],
            }
        )
    suspects = []
    for split, s in (audit.get("suspects") or {}).items():
        for x in (s or {}).get("top") or []:
            suspects.append(
                {
                    "split": str(split),
                    "image": str(x.get("image")),
                    "label": str(x.get("label")),
                    "suggested": str(x.get("suggested")),
                    "probability": _num(x.get("probability")),
                    "quality": _num(x.get("quality"), 3),
                    "acceptable": bool(x.get("acceptable")),
                    "src": _thumb(run_dir, x.get("thumb")),
                }
            )
    png = strip_png(audit)
    seconds = (audit.get("seconds") or {}).get("total")
    return {
        "available": True,
        "item": item,
        "reference": {
            "median": _num(ref.get("median")),
            "range": f"{_num(ref.get('min'))}–{_num(ref.get('max'))}",
            "level": _num(ref.get("level"), 3),
            "quantile": f"{ref['quantile']:g}" if is_num(ref.get("quantile")) else NA,
            "n": ref.get("n"),
        }
        if ref
        else None,
        "sets": sets,
        "figure": data_uri(png) if png else None,
        "suspects": suspects,
        "within": [
            {"split": str(split), "a": p["images"][0], "b": p["images"][1], "how": str(p.get("how"))}
            for split, pairs in (audit.get("within") or {}).items()
            for p in pairs or []
            if isinstance(p, Mapping) and len(p.get("images") or []) == 2
        ],
        "health": [str(h.get("text")) for h in audit.get("health") or [] if isinstance(h, Mapping)],
        "reason": str(audit.get("reason") or ""),
        "labels_note": "; ".join(str(n) for n in (audit.get("labels") or {}).get("notes") or []),
        "embedding": (audit.get("embedding") or {}).get("backbone") or NA,
        "seconds": f"{seconds:.1f} s" if is_num(seconds) else NA,
    }
