#!/usr/bin/env python3
"""Print a markdown table of where the models of a run look, each figure beside its chance level:

    python scripts/localization_table.py RUN_DIR [--split test_difficult]

Per model and saliency method (Grad-CAM, occlusion, ...): mean energy share inside the labelled regions and the
pointing-game hit rate, each with a uniform map's chance level; the sanity check's mean Spearman correlation between
the maps of the trained model and of the model with its last layer randomised; the per-image rank agreement of the
method with Grad-CAM (Spearman over the images' energy shares); seconds and forward passes per image.
Reads only report.json (run `harness report RUN_DIR` first if it is missing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.saliency.registry import method_info


def _f(v, fmt="{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--split", help="only this test set")
    args = ap.parse_args(argv)
    path = args.run_dir / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"{path}: cannot read the report ({exc}); run `harness report {args.run_dir}`", file=sys.stderr)
        return 2
    by_model = {}
    for entry in report.get("variants", {}).values():
        by_model.setdefault(entry["model"], entry)
    print(
        "| model | method | test set | energy share (chance) | pointing rate (chance) | sanity Spearman | "
        "rank agreement with Grad-CAM | s / image | passes / image |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in report.get("localization", []):
        if args.split and row["split"] != args.split:
            continue
        entry = by_model.get(row["model"], {})
        ev = entry.get("cam") if row["method"] == "cam" else (entry.get("saliency") or {}).get(row["method"])
        ev = ev or {}
        agree = ((entry.get("agreement") or {}).get(row["method"]) or {}).get(row["split"]) or {}
        print(
            f"| {row['model']} | {method_info(row['method']).title} | {row['split'] or '-'} | "
            f"{_f(row.get('energy'))} ({_f(row.get('energy_chance'))}) | "
            f"{_f(row.get('pointing'))} ({_f(row.get('pointing_chance'))}) | "
            f"{_f(row.get('sanity_spearman'), '{:.2f}')} | "
            f"{_f(agree.get('spearman'), '{:.2f}') if row['method'] != 'cam' else '-'} | "
            f"{_f(ev.get('seconds_per_image'), '{:.2f}')} | {_f(ev.get('passes_per_image'), '{:.0f}')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
