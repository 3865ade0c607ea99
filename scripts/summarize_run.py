#!/usr/bin/env python3
"""Print a markdown table summarising a run directory: per variant, training time and images/s (history.json),
easy/difficult soft and strict accuracy (metrics.json) and the training device (config.json).

    python scripts/summarize_run.py RUN_DIR [--wall-times RUN_DIR/wall_times.tsv] [--gpu-log gpu_util.csv]

--wall-times adds the wall time of the whole `harness run` per variant (train + export + evaluate + cam), as
scripts/gpu_run.sh records it (tab-separated: variant id, start, end, exit code, in Unix seconds);
--gpu-log adds the mean GPU utilisation while each variant ran, from `unix_seconds,util_percent,memory_MiB` lines.
Reads only JSON files; needs neither torch nor the harness package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SPLITS = ("test_easy", "test_difficult")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def read_wall_times(path: Path | None) -> dict[str, tuple[float, float, int]]:
    out: dict[str, tuple[float, float, int]] = {}
    if path is None or not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and not line.startswith("#"):
            try:
                out[parts[0]] = (float(parts[1]), float(parts[2]), int(parts[3]))
            except ValueError:
                continue
    return out


def read_gpu_log(path: Path | None) -> list[tuple[float, float, float]]:
    rows: list[tuple[float, float, float]] = []
    if path is None or not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            rows.append((float(parts[0]), float(parts[1]), float(parts[2]) if len(parts) > 2 else float("nan")))
        except (ValueError, IndexError):
            continue  # header lines, "[N/A]" samples
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def variant_row(
    vdir: Path, wall: dict[str, tuple[float, float, int]], gpu: list[tuple[float, float, float]]
) -> dict[str, Any]:
    config = _read(vdir / "config.json") or {}
    history = _read(vdir / "history.json") or {}
    metrics = _read(vdir / "metrics.json") or {}
    epochs = history.get("epochs", [])
    images = sum(e.get("images", 0) for e in epochs)
    epoch_s = sum(e.get("seconds", 0.0) for e in epochs)
    row: dict[str, Any] = {
        "variant": vdir.name,
        "wall_s": None,
        "status": "ok" if metrics else "incomplete",
        "train_s": history.get("seconds"),
        "epochs": len(epochs),
        "images_per_s": images / epoch_s if epoch_s > 0 else None,
        "gpu_util": None,
        "gpu_mem": None,
    }
    if vdir.name in wall:
        start, end, rc = wall[vdir.name]
        row["wall_s"] = end - start
        if rc not in (0, 1) or not metrics:  # harness run exits 1 on a FAIL verdict: not a crash
            row["status"] = f"rc {rc}" + ("" if metrics else ", no metrics.json")
        samples = [(u, m) for t, u, m in gpu if start <= t <= end]
        if samples:
            row["gpu_util"] = sum(u for u, _ in samples) / len(samples)
            row["gpu_mem"] = max(m for _, m in samples)
    for split in SPLITS:
        s = metrics.get("test_sets", {}).get(split, {})
        row[f"{split}_soft"] = s.get("soft", {}).get("value")
        row[f"{split}_strict"] = s.get("strict", {}).get("value")
    dev = config.get("device", {})
    row["device"] = dev.get("gpu") or dev.get("type") or "-"
    if dev.get("type") == "cpu" and dev.get("cpu_threads"):
        row["device"] = f"cpu ({dev['cpu_threads']} threads)"
    return row


def table(rows: list[dict[str, Any]], with_gpu: bool) -> str:
    head = [
        "variant",
        "wall s",
        "train s",
        "epochs",
        "train images/s",
        "easy soft",
        "easy strict",
        "difficult soft",
        "difficult strict",
        "device",
    ]
    head += (["GPU util % (mean)", "GPU MiB (max)"] if with_gpu else []) + ["status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [
            r["variant"],
            _fmt(r["wall_s"], ".1f"),
            _fmt(r["train_s"], ".1f"),
            str(r["epochs"]),
            _fmt(r["images_per_s"], ".1f"),
            _fmt(r["test_easy_soft"], ".2f"),
            _fmt(r["test_easy_strict"], ".2f"),
            _fmt(r["test_difficult_soft"], ".2f"),
            _fmt(r["test_difficult_strict"], ".2f"),
            r["device"],
        ]
        if with_gpu:
            cells += [_fmt(r["gpu_util"], ".0f"), _fmt(r["gpu_mem"], ".0f")]
        lines.append("| " + " | ".join(cells + [r["status"]]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    ap.add_argument("--wall-times", type=Path, help="wall-time TSV (default RUN_DIR/wall_times.tsv if present)")
    ap.add_argument("--gpu-log", type=Path, help="GPU utilisation samples: unix_seconds,util_percent,memory_MiB")
    args = ap.parse_args(argv)
    run_dir = args.run_dir
    if not run_dir.is_dir():
        print(f"summarize_run: {run_dir} is not a directory", file=sys.stderr)
        return 2
    vdirs = sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "config.json").is_file())
    if not vdirs:
        print(
            f"summarize_run: {run_dir} holds no variant folders (<backbone>-<variant>-s<seed>/config.json)",
            file=sys.stderr,
        )
        return 2
    wall = read_wall_times(args.wall_times or run_dir / "wall_times.tsv")
    gpu = read_gpu_log(args.gpu_log)
    rows = [variant_row(v, wall, gpu) for v in vdirs]
    report = _read(run_dir / "report.json") or {}
    print(f"### {run_dir.name}" + (f" (verdict {report['verdict']})" if report.get("verdict") else ""))
    print()
    print(table(rows, with_gpu=bool(gpu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
