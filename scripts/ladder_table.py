#!/usr/bin/env python3
"""Print the baseline ladder of one or more runs as one markdown table: per run and test set, the constant answer,
kNN, the linear probe and every (model, seed) with soft and strict accuracy and the exact McNemar test against the
probe (model-only / probe-only discordant photos, p), then each model's worst seed.

    python scripts/ladder_table.py RUN_DIR [RUN_DIR ...] [--split test_difficult]

Reads only report.json's `ladder` (run `harness report RUN_DIR` first if it is missing)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def _acc(line: dict[str, Any], key: str) -> str:
    m = line.get(key) or {}
    return f"{m['value']:.3f} ({m['k']}/{line['n']})" if isinstance(m.get("value"), (int, float)) else "-"


def _mcnemar(line: dict[str, Any]) -> str:
    m = line.get("mcnemar_vs_probe")
    if not isinstance(m, dict):
        return "-"
    return f"{m['model_only']} / {m['probe_only']}, p = {m['p']:.3g}"


def _name(line: dict[str, Any], ladder: dict[str, Any]) -> str:
    if line["name"] == "constant":
        return f"constant answer ({line.get('label')})"
    if line["name"] == "knn":
        return f"kNN (k = {(ladder.get('knn') or {}).get('k')})"
    if line["name"] == "probe":
        return f"linear probe (C = {(ladder.get('probe') or {}).get('C')})"
    return f"{line['model']} s{line['seed']}"


def rows(run: Path, splits: list[str] | None) -> list[str]:
    report = json.loads((run / "report.json").read_text())
    ladder = report.get("ladder") or {}
    if not ladder.get("available"):
        return [f"| {run.name} | - | the report has no ladder: {ladder.get('why') or ladder.get('skipped')} | | | |"]
    out = []
    for split, entry in (ladder.get("test_sets") or {}).items():
        if splits and split not in splits:
            continue
        probe = next((x for x in entry["lines"] if x["name"] == "probe"), None)
        worst: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in entry["lines"]:
            out.append(
                f"| {run.name} | {split} | {_name(line, ladder)} | {_acc(line, 'soft')} | {_acc(line, 'strict')} "
                f"| {_mcnemar(line)} |"
            )
            if "model" in line:
                worst[line["model"]].append(line)
        for model, lines in worst.items():
            w = min(lines, key=lambda x: (x["soft"]["value"], x["strict"]["value"]))
            verdict = "not below" if probe and w["soft"]["value"] >= probe["soft"]["value"] else "BELOW"
            out.append(
                f"| {run.name} | {split} | **{model} worst seed (s{w['seed']})** | {_acc(w, 'soft')} "
                f"| {_acc(w, 'strict')} | {verdict} the probe's soft |"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--split", action="append", help="only these test sets (repeatable)")
    args = ap.parse_args(argv)
    print("| run | test set | rung | soft | strict | McNemar vs probe (model-only / probe-only) |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        try:
            print("\n".join(rows(run, args.split)))
        except (OSError, ValueError, KeyError) as exc:
            print(f"{run}: no readable report.json ladder ({exc}); run `harness report {run}`", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
