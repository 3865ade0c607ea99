"""Assemble report.json from a run directory: protocol, accuracy matrix over seeds, per-variant evidence, verdicts."""

from __future__ import annotations

import datetime as _dt
import statistics
from pathlib import Path
from typing import Any

from harness import artifacts
from harness.thresholds import Thresholds, parse_thresholds
from harness.verdicts import collect, judge, judged_table, overall


def read_protocol(run_dir: Path) -> dict[str, Any]:
    """run.json, checked enough to build a report from (a clear error naming the file otherwise)."""
    path = Path(run_dir) / "run.json"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    proto = artifacts.read_json(path)
    if not isinstance(proto, dict) or not isinstance(proto.get("profile"), dict) \
            or not isinstance(proto.get("thresholds"), dict):
        raise ValueError(f"{path}: not a harness run.json (needs the objects 'profile' and 'thresholds'); "
                         f"rerun harness run into this directory")
    return proto


def thresholds_of_run(run_dir: Path, user_file: Path | None = None) -> Thresholds:
    """The thresholds recorded in run.json (optionally overridden by a user file), checked against the run:
    a rule for a test set the run does not have, or a gated variant it did not run, is an error."""
    from harness.thresholds import check_applies

    proto = read_protocol(run_dir)
    raw = {k: v for k, v in proto["thresholds"].items() if k != "source"}
    t = parse_thresholds(raw, proto["thresholds"].get("source", "run.json"), user_file)
    profile = proto["profile"]
    check_applies(t, list(profile.get("test_sets") or []), list(proto.get("variants") or []),
                  str(user_file) if user_file else str(Path(run_dir) / "run.json"),
                  backbones=[str(profile.get("backbone") or "")])
    return t


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)} if values else {}


def _variant_entry(folder: Path, metrics: dict | None, cam: dict | None, export: dict | None) -> dict[str, Any]:
    config = artifacts.read_json(folder / "config.json")
    history_path = folder / "history.json"
    history = artifacts.read_json(history_path) if history_path.exists() else {"epochs": [], "seconds": None}
    entry: dict[str, Any] = {
        "folder": folder.name, "variant": config["variant"], "seed": config["seed"], "backbone": config["backbone"],
        "model": f"{config['backbone']}-{config['variant']}", "inputs": config.get("inputs"),
        "init": config["init"], "level": config["level"], "device": config.get("device"),
        "train_seconds": history.get("seconds"), "history": history.get("epochs", []),
    }
    if export:
        cpu = (export.get("parity") or {}).get("cpu") or {}
        entry["export"] = {"exporter": (export.get("exporter") or {}).get("name"), "opset": export.get("opset"),
                           "bytes": export.get("bytes"), "parity_passed": (export.get("parity") or {}).get("passed"),
                           "max_abs": cpu.get("max_abs"), "max_rel": cpu.get("max_rel"), "atol": cpu.get("atol"),
                           "rtol": cpu.get("rtol"), "cuda": (export.get("parity") or {}).get("cuda")}
    if metrics:
        entry["test_sets"] = metrics.get("test_sets", {})
        entry["latency"] = metrics.get("latency", {})
        entry["runtime"] = metrics.get("runtime", {})
    if cam:
        entry["cam"] = {"summary": cam.get("summary", {}), "protocol": cam.get("protocol", {}),
                        "images": {split: [{k: r.get(k) for k in ("image", "label", "predicted", "probability", "correct",
                                                                    "status", "overlay")} | {"overlay_path": str(folder.name + "/" + r["overlay"]) if r.get("overlay") else None}
                                           for r in recs] for split, recs in cam.get("images", {}).items()}}
    return entry


def build_report(run_dir: Path, thresholds: Thresholds | None = None) -> dict[str, Any]:
    run_dir = Path(run_dir)
    proto = read_protocol(run_dir)
    thresholds = thresholds or thresholds_of_run(run_dir)
    test_sets = proto["profile"]["test_sets"]
    groups = collect(run_dir, proto["profile"])
    verdicts = judge(run_dir, thresholds, test_sets, proto.get("variants", []), str(proto["profile"].get("backbone", "")),
                     proto["profile"])
    matrix: dict[str, dict[str, Any]] = {}
    baselines: dict[str, Any] = {}
    variants: dict[str, Any] = {}
    for variant, runs in groups.items():
        matrix[variant] = {}
        for split in test_sets:
            per = [r.metrics["test_sets"][split] for r in runs if r.metrics and split in r.metrics.get("test_sets", {})]
            if not per:
                continue
            baselines.setdefault(split, per[0]["baselines"])
            matrix[variant][split] = {
                kind: _stats([p[kind]["value"] for p in per]) | {
                    "per_seed": {f"s{r.seed}": r.metrics["test_sets"][split][kind]["value"] for r in runs if r.metrics},
                    "wilson_worst": min((p[kind]["wilson"] for p in per), key=lambda w: w[0]),
                    "k": [p[kind]["k"] for p in per], "n": per[0]["n"]}
                for kind in ("soft", "strict")
            }
        for r in runs:
            variants[r.folder.name] = _variant_entry(r.folder, r.metrics, r.cam, r.export) | {
                "problems": dict(r.problems)}
    return {
        "schema": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir.resolve()),
        "verdict": overall(verdicts),
        "gated_variants": list(thresholds.gated),
        "verdicts": [v.to_dict() for v in verdicts],
        "judged": judged_table(verdicts),
        "matrix": matrix,
        "baselines": baselines,
        "protocol": proto | {"thresholds": thresholds.to_dict()},
        "variants": variants,
    }


def write_reports(run_dir: Path, report: dict[str, Any]) -> tuple[Path, Path | None]:
    """report.json always; report.html when the HTML renderer is available."""
    run_dir = Path(run_dir)
    json_path = artifacts.write_json(run_dir / "report.json", report)
    from harness.report.html import render_html

    html_path = artifacts.write_text(run_dir / "report.html", render_html(report, run_dir))
    return json_path, html_path
