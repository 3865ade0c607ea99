"""The regression rule of `harness compare` (`Thresholds.regression`, RegressionRule): which differences between
BASELINE and NEW count as a regression of NEW.

- "verdict": a gated criterion (criterion, id) that is PASS in BASELINE and is not PASS in NEW (FAIL, ERROR, SKIP or
  absent);
- "accuracy_drop": a gated model's soft or strict accuracy on a common test set falls by more than max_drop (a drop
  of exactly max_drop, e.g. one photo in 20 at 0.05, is allowed);
- "mcnemar": it falls (more right -> wrong than wrong -> right among the paired predictions) with exact McNemar
  p < mcnemar_p.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.thresholds import Thresholds, is_gated

EPS = 1e-9  # accuracies are k/n floats: 1.0 - 0.95 is 0.05000000000000004, which is not a drop above 0.05


def _verdict_gated(v: Mapping[str, Any], thresholds: Thresholds) -> bool:
    """A model's verdict: whether the thresholds gate its model; the run's own (protocol, no variant): its gated."""
    if v.get("variant") and "backbone" in v:
        return is_gated(thresholds, str(v.get("backbone") or ""), str(v.get("variant") or ""))
    return bool(v.get("gated"))


def verdict_changes(base: Mapping[str, Any], new: Mapping[str, Any], thresholds: Thresholds) -> list[dict[str, Any]]:
    """Every gated (criterion, id) whose status differs (a side without it: status None), in NEW's order."""
    key = lambda v: (str(v.get("criterion")), str(v.get("id")))  # noqa: E731
    vb = {key(v): v for v in base["verdicts"] if isinstance(v, Mapping)}
    vn = {key(v): v for v in new["verdicts"] if isinstance(v, Mapping)}
    out = []
    for k in list(vn) + [k for k in vb if k not in vn]:
        b, n = vb.get(k), vn.get(k)
        sb, sn = (b or {}).get("status"), (n or {}).get("status")
        ref: Mapping[str, Any] = n or b or {}  # k is a key of vn or vb: one side has it
        if sb == sn or not _verdict_gated(ref, thresholds):
            continue
        out.append(
            {
                "criterion": k[0],
                "id": k[1],
                "model": ref.get("model"),
                "subject": ref.get("subject") or "",
                "baseline": sb,
                "new": sn,
                "baseline_value": (b or {}).get("value"),
                "new_value": (n or {}).get("value"),
                "threshold": ref.get("threshold"),
                "comparison": ref.get("comparison"),
            }
        )
    return out


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def regressions(
    rows: Sequence[Mapping[str, Any]], changes: Sequence[Mapping[str, Any]], thresholds: Thresholds
) -> list[dict[str, Any]]:
    rule = thresholds.regression
    out = []
    for c in changes:
        if c["baseline"] == "PASS" and c["new"] != "PASS":
            out.append(
                {
                    "kind": "verdict",
                    "model": c["model"],
                    "subject": c["subject"],
                    "detail": f"{c['criterion']}[{c['id']}] PASS -> {c['new'] or 'absent'} "
                    f"(value {_fmt(c['baseline_value'])} -> {_fmt(c['new_value'])}, "
                    f"threshold {_fmt(c['threshold'])})",
                }
            )
    for r in rows:
        if not r["gated"]:
            continue
        for kind in ("soft", "strict"):
            m = r[kind]
            if m["delta"] is None:
                continue
            drop = -m["delta"]
            values = f"{m['baseline']['value']:.3f} -> {m['new']['value']:.3f}"
            if rule.max_drop is not None and drop > rule.max_drop + EPS:
                out.append(
                    {
                        "kind": "accuracy_drop",
                        "model": r["model"],
                        "subject": r["test_set"],
                        "detail": f"{kind} accuracy {values} drops by {drop:.3f} > max_drop {rule.max_drop:g}",
                    }
                )
            p = m["paired"]
            if rule.mcnemar_p is not None and p and p["a_only"] > p["b_only"] and p["p"] < rule.mcnemar_p:
                out.append(
                    {
                        "kind": "mcnemar",
                        "model": r["model"],
                        "subject": r["test_set"],
                        "detail": f"{kind} accuracy {values}: {p['a_only']} right -> wrong vs {p['b_only']} "
                        f"wrong -> right, exact McNemar p = {p['p']:.3g} < {rule.mcnemar_p:g}",
                    }
                )
    return out
