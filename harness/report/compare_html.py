"""compare.json -> one self-contained compare.html (inline CSS, thumbnails as base64 JPEG data URIs, offline)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from harness.report.format import NA
from harness.report.jinja import template_env
from harness.report.wording import method_title

__all__ = ["render_compare_html", "thumbnail_uri", "THUMB_PX", "MAX_THUMBNAILS"]

THUMB_PX = 160
MAX_THUMBNAILS = 400  # beyond this many flipped photos, the rest are listed by name only (keeps the page small)


def thumbnail_uri(data_root: str | Path | None, rel: str, max_px: int = THUMB_PX) -> str | None:
    """data:image/jpeg;base64,... of data_root/rel shrunk to max_px, or None when it cannot be read or lies outside
    data_root."""
    if not data_root:
        return None
    root = Path(data_root).resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            rgb.thumbnail((max_px, max_px))
            buf = io.BytesIO()
            rgb.save(buf, format="JPEG", quality=80)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _num(v: Any, digits: int = 3, signed: bool = False) -> str:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return NA
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _conf(v: Any) -> str:
    """A probability beside a predicted label, or "" when not recorded."""
    return "" if v is None else _num(v, 2)


def _p(v: Any) -> str:
    if v is None:
        return NA
    return f"{v:.3g}"


def _acc(side: Mapping[str, Any] | None) -> dict[str, str]:
    if not side:
        return {"value": NA, "ci": "", "counts": ""}
    w = side.get("wilson")
    ci = f"[{w[0]:.3f}, {w[1]:.3f}]" if w else ""
    return {
        "value": _num(side["value"]),
        "ci": ci,
        "counts": f"{side['k']}/{side['n']}" + (f" over {side['seeds']} seeds" if side.get("seeds", 1) > 1 else ""),
    }


def _delta_css(delta: Any) -> str:
    if not isinstance(delta, (int, float)) or abs(delta) < 1e-9:
        return ""
    return "up" if delta > 0 else "down"


def _rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in result["comparisons"]:
        row = {
            "model": r["model"],
            "test_set": r["test_set"],
            "gated": r["gated"],
            "seeds": ", ".join(f"s{s}" for s in r["seeds"]["paired"]) or "none (unpaired)",
            "pairs": r["pairs"],
            "flips_down": len(r["flips"]["right_to_wrong"]),
            "flips_up": len(r["flips"]["wrong_to_right"]),
        }
        for kind in ("soft", "strict"):
            m = r[kind]
            p = m.get("paired")
            row[kind] = {
                "baseline": _acc(m["baseline"]),
                "new": _acc(m["new"]),
                "delta": _num(m["delta"], signed=True),
                "css": _delta_css(m["delta"]),
                "discordant": f"{p['a_only']} ↓ / {p['b_only']} ↑" if p else NA,
                "p": _p(p["p"]) if p else NA,
            }
        out.append(row)
    return out


def _localization(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in result["comparisons"]:
        for method, row in r["localization"].items():
            cells = {}
            for key in ("energy_share", "pointing_rate"):
                c = row.get(key)
                cells[key] = (
                    {
                        "baseline": _num(c["baseline"]),
                        "new": _num(c["new"]),
                        "delta": _num(c["delta"], signed=True),
                        "css": _delta_css(c["delta"]),
                    }
                    if c
                    else {"baseline": NA, "new": NA, "delta": "", "css": ""}
                )
            out.append({"model": r["model"], "test_set": r["test_set"], "method": method_title(method), **cells})
    return out


def _latency(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "model": x["model"],
            "batch": x["batch"],
            "baseline": _num(x["baseline_ms"], 2),
            "new": _num(x["new_ms"], 2),
            "ratio": _num(x["ratio"], 2) + ("×" if x["ratio"] is not None else ""),
            "css": "down" if (x["ratio"] or 0) > 1.2 else ("up" if (x["ratio"] or 1) < 0.8 else ""),
        }
        for x in result["latency"]
    ]


def _flips(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    root = result["new"].get("data_root")
    cache: dict[str, str | None] = {}
    budget = [MAX_THUMBNAILS]

    def card(f: Mapping[str, Any]) -> dict[str, Any]:
        name = f["image"]
        if name not in cache and budget[0] > 0:
            cache[name] = thumbnail_uri(root, name)
            budget[0] -= 1
        src = cache.get(name)
        note = "" if src else ("image not found" if name in cache else "thumbnail left out (too many flips)")
        acceptable = f.get("acceptable") or []
        return {
            "image": name,
            "src": src,
            "note": note,
            "seed": f"s{f['seed']}",
            "primary": f.get("primary") or NA,
            "acceptable": ", ".join(map(str, acceptable)) if len(acceptable) > 1 else "",
            "baseline": str(f.get("baseline_predicted")),
            "new": str(f.get("new_predicted")),
            "baseline_conf": _conf(f.get("baseline_confidence")),
            "new_conf": _conf(f.get("new_confidence")),
        }

    out = []
    for r in result["comparisons"]:
        down, up = r["flips"]["right_to_wrong"], r["flips"]["wrong_to_right"]
        if down or up:
            out.append(
                {
                    "model": r["model"],
                    "test_set": r["test_set"],
                    "gated": r["gated"],
                    "down": [card(f) for f in down],
                    "up": [card(f) for f in up],
                }
            )
    return out


def _status(s: Any) -> str:
    return s if s else "absent"


def context(result: Mapping[str, Any]) -> dict[str, Any]:
    rule = result["thresholds"]["regression"]
    clauses = []
    if rule["max_drop"] is not None:
        clauses.append(f"drops by more than {rule['max_drop']:g}")
    if rule["mcnemar_p"] is not None:
        clauses.append(f"drops with exact McNemar p < {rule['mcnemar_p']:g}")
    rule_text = "a gated criterion that passed in BASELINE and does not pass in NEW" + (
        ", or a gated accuracy (soft or strict, per model and test set) that " + " or ".join(clauses) if clauses else ""
    )

    def side(s: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "name": s["name"],
            "file": s["file"],
            "created": s.get("created") or NA,
            "verdict": s.get("verdict") or NA,
            "profile": s.get("profile") or NA,
            "seeds": ", ".join(map(str, s.get("seeds") or [])) or NA,
        }

    return {
        "verdict": result["verdict"],
        "css": "fail" if result["verdict"] == "REGRESSION" else "pass",
        "baseline": side(result["baseline"]),
        "new": side(result["new"]),
        "thresholds_source": result["thresholds"]["source"] or NA,
        "rule": rule_text,
        "gated": ", ".join("every model" if g == "*" else g for g in result["thresholds"]["gated"]) or "none",
        "regressions": result["regressions"],
        "changes": [
            c
            | {
                "baseline_s": _status(c["baseline"]),
                "new_s": _status(c["new"]),
                "baseline_v": _num(c["baseline_value"], 4),
                "new_v": _num(c["new_value"], 4),
            }
            for c in result["verdict_changes"]
        ],
        "test_sets": ", ".join(result["test_sets"]),
        "only_baseline": result["only_in_baseline"]["test_sets"] + result["only_in_baseline"]["models"],
        "only_new": result["only_in_new"]["test_sets"] + result["only_in_new"]["models"],
        "rows": _rows(result),
        "localization": _localization(result),
        "latency": _latency(result),
        "flips": _flips(result),
        "data_root": result["new"].get("data_root") or NA,
        "thumb_px": THUMB_PX,
        "NA": NA,
    }


def render_compare_html(result: Mapping[str, Any]) -> str:
    """One self-contained page: the verdict, what regressed, the paired figures, the flipped photos.

    The result of `harness.compare.compare_reports` becomes a view model of plain strings (every number formatted
    here) rendered with `templates/compare.html`. Thumbnails of the flipped photos are read from NEW's recorded data
    root plus the image's relative name, at most THUMB_PX on a side; a missing file (or a name that leaves the data
    root) shows its name and "image not found"."""
    return template_env().get_template("compare.html").render(**context(result))
