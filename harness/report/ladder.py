"""The accuracy section's baseline ladder (report.json's `ladder`, harness.baselines.judging): per test set, the
constant answer -> kNN -> linear probe -> each model (per seed), soft and strict accuracy with their 95% Wilson
intervals and the exact McNemar test against the probe, every figure formatted here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.report.format import NA, dig, fmt_acc, fmt_num, split_label

TITLES = {"constant": "best constant answer", "knn": "k-nearest-neighbours", "probe": "linear probe"}


def _acc(entry: Any) -> str:
    if not isinstance(entry, Mapping) or entry.get("value") is None:
        return NA
    lo, hi = (entry.get("wilson") or [None, None])[:2]
    return f"{fmt_acc(entry['value'])} ({entry.get('k')}) [{fmt_acc(lo)}, {fmt_acc(hi)}]"


def _mcnemar(m: Any) -> str:
    if not isinstance(m, Mapping):
        return ""
    return f"+{m.get('model_only')} / -{m.get('probe_only')}, p = {fmt_num(m.get('p'))}"


def _title(line: Mapping[str, Any], ladder: Mapping[str, Any]) -> str:
    name = str(line.get("name"))
    if name == "constant":
        return f"{TITLES[name]} (“{line.get('label')}”; strict “{line.get('strict_label')}”)"
    if name == "knn":
        return f"{TITLES[name]} (k = {dig(ladder, 'knn', 'k', default='?')})"
    if name == "probe":
        return f"{TITLES[name]} (C = {fmt_num(dig(ladder, 'probe', 'C'))})"
    return f"{line.get('model', name)} seed {line.get('seed')}"


def ladder_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """{available, why, features, tables: [{split, n, rows: [{title, soft, strict, mcnemar, model}]}]}."""
    ladder = report.get("ladder")
    if not isinstance(ladder, Mapping) or not ladder.get("available"):
        why = ladder.get("why") if isinstance(ladder, Mapping) else "the report has no ladder (an older harness)"
        return {"available": False, "why": str(why or NA), "tables": []}
    features: Mapping[str, Any] = ladder["features"] if isinstance(ladder.get("features"), Mapping) else {}
    tables: list[dict[str, Any]] = []
    for split, entry in (ladder.get("test_sets") or {}).items():
        if not isinstance(entry, Mapping) or not entry.get("available"):
            tables.append({"split": split_label(split), "n": "?", "rows": [], "why": str(dig(entry, "why") or NA)})
            continue
        rows = [
            {
                "title": _title(line, ladder),
                "soft": _acc(line.get("soft")) if line.get("available", True) else str(line.get("why")),
                "strict": _acc(line.get("strict")) if line.get("available", True) else "",
                "mcnemar": _mcnemar(line.get("mcnemar_vs_probe")),
                "model": line.get("name") not in TITLES,
            }
            for line in entry.get("lines") or []
            if isinstance(line, Mapping)
        ]
        tables.append({"split": split_label(split), "n": entry.get("n"), "rows": rows, "why": ""})
    return {
        "available": True,
        "why": str(ladder.get("skipped") or ""),
        "features": f"{features.get('backbone', '?')} at {features.get('size', '?')} px ({features.get('why', '')})",
        "train_n": dig(ladder, "train", "n", default="?"),
        "tables": tables,
    }
