#!/usr/bin/env python3
"""Print a markdown table of the spread over seeds of a run: per model and test set, worst / mean / best soft and
strict accuracy, and the Grad-CAM / occlusion energy share (on the test sets that have regions).

    python scripts/seed_table.py RUN_DIR

Reads only report.json (run `harness report RUN_DIR` first if it is missing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def _wmb(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f} / {statistics.fmean(values):.2f} / {max(values):.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    path = args.run_dir / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"{path}: cannot read the report ({exc}); run `harness report {args.run_dir}`", file=sys.stderr)
        return 2
    splits = list(report["protocol"]["profile"].get("test_sets") or [])
    by_model: dict[str, list[dict]] = {}
    for entry in report["variants"].values():
        by_model.setdefault(entry["model"], []).append(entry)
    print(
        "| model | seeds | test set | soft worst / mean / best | strict worst / mean / best | "
        "Grad-CAM energy w/m/b | occlusion energy w/m/b |"
    )
    print("|---|---|---|---|---|---|---|")
    for model, runs in sorted(by_model.items()):
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        for split in splits:
            soft = [r["test_sets"][split]["soft"]["value"] for r in runs if split in (r.get("test_sets") or {})]
            strict = [r["test_sets"][split]["strict"]["value"] for r in runs if split in (r.get("test_sets") or {})]

            def energy(ev_of, runs=runs, split=split) -> list[float]:
                out = []
                for r in runs:
                    s = ((ev_of(r) or {}).get("summary") or {}).get(split) or {}
                    if s.get("has_regions") and s.get("energy_share_mean") is not None:
                        out.append(s["energy_share_mean"])
                return out

            cam = energy(lambda r: r.get("cam"))
            occ = energy(lambda r: (r.get("saliency") or {}).get("occlusion"))
            print(f"| {model} | {seeds} | {split} | {_wmb(soft)} | {_wmb(strict)} | {_wmb(cam)} | {_wmb(occ)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
