"""Robustness in `harness compare BASELINE NEW`: per (model, test set, corruption, severity), soft accuracy under the
corruption on each side, paired photo by photo over the seeds both sides have (report.json's robustness.per_image),
with the exact McNemar test; object-masking and faithfulness figures side by side.

A gated model's corruption that the robustness rule gates ([thresholds.robustness] gated) regresses as accuracy does
(harness.regression, RegressionRule): a fall by more than max_drop, or a fall with McNemar p < mcnemar_p. Every other
cell is reported with the same flags (`regressed`), so a nightly sees a robustness regression of an ablation too,
without it failing the comparison.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from harness.stats import paired
from harness.thresholds import Thresholds, is_gated

EPS = 1e-9


def _section(report: Mapping[str, Any]) -> Mapping[str, Any]:
    sec = report.get("robustness")
    return sec if isinstance(sec, Mapping) else {}


def _folders(report: Mapping[str, Any]) -> dict[str, tuple[str, int, str, str]]:
    """folder -> (model, seed, backbone, variant) of every variant entry."""
    out = {}
    for folder, e in (report.get("variants") or {}).items():
        if isinstance(e, Mapping):
            model = str(e.get("model") or f"{e.get('backbone')}-{e.get('variant')}")
            out[str(folder)] = (
                model,
                int(e.get("seed") or 0),
                str(e.get("backbone") or ""),
                str(e.get("variant") or ""),
            )
    return out


def _cells(report: Mapping[str, Any]) -> dict[tuple[str, str, str, str], dict[int, dict[str, bool]]]:
    """(model, split, corruption, severity) -> seed -> {image: soft right?}, recomputed from each recorded answer
    (the predicted label among the photo's acceptable ones); the clean answers under (model, split, 'clean', '0')."""
    folders = _folders(report)
    out: dict[tuple[str, str, str, str], dict[int, dict[str, bool]]] = {}
    for folder, per in (_section(report).get("per_image") or {}).items():
        if folder not in folders or not isinstance(per, Mapping):
            continue
        model, seed = folders[folder][:2]
        for split, e in per.items():
            images = [str(i) for i in e.get("images") or []]
            ok = [set(a or []) for a in e.get("acceptable") or []]

            def right(preds: Any, images: list[str] = images, ok: list[set] = ok) -> dict[str, bool]:
                return {i: p in a for i, p, a in zip(images, preds or [], ok)}

            out.setdefault((model, split, "clean", "0"), {})[seed] = right(e.get("clean"))
            for c, by in (e.get("corrupted") or {}).items():
                for sev, preds in (by or {}).items():
                    out.setdefault((model, split, str(c), str(sev)), {})[seed] = right(preds)
    return out


def _mean_rows(rows: Any, key: tuple[str, ...], fields: tuple[str, ...]) -> dict[tuple, dict[str, float | None]]:
    out: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows or []:
        if isinstance(r, Mapping):
            out.setdefault(tuple(r.get(k) for k in key), []).append(r)
    return {
        k: {
            f: (statistics.fmean(v) if (v := [float(r[f]) for r in rs if isinstance(r.get(f), (int, float))]) else None)
            for f in fields
        }
        for k, rs in out.items()
    }


def compare_robustness(base: Mapping[str, Any], new: Mapping[str, Any], thresholds: Thresholds) -> dict[str, Any]:
    """{"corruption": rows, "masking": rows, "faithfulness": rows, "regressions": [...]} (see the module docstring)."""
    cb, cn = _cells(base), _cells(new)
    ids = {m: (b, v) for m, _, b, v in _folders(new).values()} | {m: (b, v) for m, _, b, v in _folders(base).values()}
    rule, reg = thresholds.robustness, thresholds.regression
    rows, found = [], []
    for key in [k for k in cn if k in cb and k[2] != "clean"]:
        model, split, corruption, sev = key
        seeds = sorted(set(cb[key]) & set(cn[key]))
        pairs = [(cb[key][s][i], cn[key][s][i]) for s in seeds for i in sorted(cn[key][s]) if i in cb[key][s]]
        if not pairs:
            continue
        b_ok, n_ok = [bool(p[0]) for p in pairs], [bool(p[1]) for p in pairs]
        acc_b, acc_n = sum(b_ok) / len(pairs), sum(n_ok) / len(pairs)
        p = paired(b_ok, n_ok)
        gated = is_gated(thresholds, *ids.get(model, ("", ""))) and rule.gates(corruption)
        drop = acc_b - acc_n
        why = []
        if reg.max_drop is not None and drop > reg.max_drop + EPS:
            why.append(f"drops by {drop:.3f} > max_drop {reg.max_drop:g}")
        if reg.mcnemar_p is not None and p["a_only"] > p["b_only"] and p["p"] < reg.mcnemar_p:
            why.append(f"{p['a_only']} right -> wrong vs {p['b_only']}, exact McNemar p = {p['p']:.3g}")
        row = {
            "model": model,
            "test_set": split,
            "corruption": corruption,
            "severity": int(sev),
            "gated": gated,
            "pairs": len(pairs),
            "baseline": acc_b,
            "new": acc_n,
            "delta": acc_n - acc_b,
            "paired": p,
            "regressed": "; ".join(why),
        }
        rows.append(row)
        if gated and why:
            found.append(
                {
                    "kind": "robustness",
                    "model": model,
                    "subject": f"{split}-{corruption}",
                    "detail": f"soft accuracy under {corruption} (severity {sev}) {acc_b:.3f} -> {acc_n:.3f}: "
                    + "; ".join(why),
                }
            )
    out: dict[str, Any] = {"corruption": rows, "regressions": found}
    for name, group, fields in (
        ("masking", ("model", "split"), ("object_lost", "random_lost", "difference", "kept")),
        ("faithfulness", ("model", "method", "split"), ("deletion", "insertion", "margin")),
    ):
        mb = _mean_rows(_section(base).get(name), group, fields)
        mn = _mean_rows(_section(new).get(name), group, fields)
        out[name] = [
            dict(zip(group, k))
            | {
                f: {
                    "baseline": mb[k][f],
                    "new": mn[k][f],
                    "delta": None if mb[k][f] is None or mn[k][f] is None else mn[k][f] - mb[k][f],  # type: ignore[operator]
                }
                for f in fields
            }
            for k in mn
            if k in mb
        ]
    return out
