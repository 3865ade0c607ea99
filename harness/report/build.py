"""Assemble report.json from a run directory: protocol, accuracy matrix over seeds, per-variant evidence, verdicts."""

from __future__ import annotations

import datetime as _dt
import statistics
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

from harness import artifacts
from harness.audit.statements import audit_report
from harness.baselines.judging import ladder
from harness.report.evidence import evidence
from harness.report.html import render_html
from harness.report.markdown import SUMMARY, run_summary
from harness.report.model_card import write_cards
from harness.robustness.summary import robustness_section
from harness.rundir import JOBS_FILE, ModelId, complete_jobs, protocol_black_box
from harness.saliency.registry import method_info
from harness.thresholds import Thresholds, check_applies, parse_thresholds
from harness.validate import ConfigError
from harness.verdicts import Verdict, judge, judged_table, overall
from harness.verdicts.collect import SeedRun, collect
from harness.verdicts.criteria import CRITERIA, LOCALIZATION, SANITY
from harness.verdicts.readers import split_metrics
from harness.verdicts.recheck import trusted_splits
from harness.verify import manifest


def read_protocol(run_dir: Path) -> dict[str, Any]:
    """run.json, checked enough to build a report from (a clear error naming the file otherwise)."""
    path = Path(run_dir) / "run.json"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    proto = artifacts.read_json(path)
    if not artifacts.has_fields(proto, {"profile": dict, "thresholds": dict}):
        raise ValueError(
            f"{path}: not a harness run.json (needs the objects 'profile' and 'thresholds'); "
            f"rerun harness run into this directory"
        )
    return proto


def thresholds_of_run(run_dir: Path, user_file: Path | None = None) -> Thresholds:
    """The thresholds recorded in run.json (optionally overridden by a user file), checked against the run:
    a rule for a test set the run does not have, or a gated variant it did not run, is an error."""
    proto = read_protocol(run_dir)
    raw = {k: v for k, v in proto["thresholds"].items() if k != "source"}
    t = parse_thresholds(raw, proto["thresholds"].get("source", "run.json"), user_file)
    profile = proto["profile"]
    check_applies(
        t,
        list(profile.get("test_sets") or []),
        list(proto.get("variants") or []),
        str(user_file) if user_file else str(Path(run_dir) / "run.json"),
        backbones=[str(profile.get("backbone") or "")],
    )
    return t


def _stats(values: list[float]) -> dict[str, Any]:
    return (
        {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)} if values else {}
    )


def _saliency_entry(folder: Path, ev: dict) -> dict[str, Any]:
    """The report's view of one saliency evidence file (cam.json, occlusion.json...): summaries, protocol, sanity,
    per-image records with the overlay's path relative to the run directory."""
    raw = ev.get("sanity")
    sanity: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return {
        "summary": ev.get("summary", {}),
        "protocol": ev.get("protocol", {}),
        "sanity": {
            k: sanity.get(k)
            for k in (
                "spearman_mean",
                "spearman_max",
                "images",
                "maps",
                "randomised",
                "skipped",
                "impossible",
                "seconds",
            )
        },
        "seconds_per_image": ev.get("seconds_per_image"),
        "passes_per_image": ev.get("passes_per_image"),
        "images": {
            split: [
                {k: r.get(k) for k in ("image", "label", "predicted", "probability", "correct", "status", "overlay")}
                | {
                    "overlay_path": f"{folder.name}/{r['overlay']}" if r.get("overlay") else None,
                    "energy_share": _primary_score(r, "energy_share"),
                    "pointing_hit": _primary_score(r, "pointing_hit"),
                }
                for r in recs
            ]
            for split, recs in ev.get("images", {}).items()
        },
    }


def _primary_score(rec: dict, key: str):
    """The score of the image's primary label's map (the figure ranked across methods), None when not scored."""
    scores = (rec.get("classes") or {}).get(rec.get("label")) if rec.get("status") == "scored" else None
    return scores.get(key) if isinstance(scores, dict) else None


def method_agreement(a: dict, b: dict, split: str) -> dict[str, Any]:
    """Per-image rank agreement of two saliency methods on one split: Spearman correlation of the primary label's
    energy share over the images both scored (None with fewer than 3)."""
    ea = {r["image"]: r.get("energy_share") for r in (a.get("images") or {}).get(split, [])}
    eb = {r["image"]: r.get("energy_share") for r in (b.get("images") or {}).get(split, [])}
    both = [k for k in ea if ea[k] is not None and eb.get(k) is not None]
    if len(both) < 3 or len({ea[k] for k in both}) < 2 or len({eb[k] for k in both}) < 2:
        return {"images": len(both), "spearman": None}  # too few, or one side constant: no rank order to compare
    rho = spearmanr([ea[k] for k in both], [eb[k] for k in both]).statistic
    return {"images": len(both), "spearman": None if rho != rho else float(rho)}


def _variant_entry(
    folder: Path,
    metrics: dict | None,
    cam: dict | None,
    export: dict | None,
    others: dict[str, dict | None] | None = None,
    test_sets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A model folder's entry in the report; `test_sets`: its metrics.json's test sets as recheck.trusted_splits
    recomputed them from the per-image predictions (never the file's stored summaries)."""
    config = artifacts.read_json(folder / "config.json")
    history_path = folder / "history.json"
    history = artifacts.read_json(history_path) if history_path.exists() else {"epochs": [], "seconds": None}
    entry: dict[str, Any] = {
        "folder": folder.name,
        "variant": config["variant"],
        "seed": config["seed"],
        "backbone": config["backbone"],
        "model": f"{config['backbone']}-{config['variant']}",
        "inputs": config.get("inputs"),
        "init": config.get("init"),
        "level": config.get("level"),
        "device": config.get("device"),
        "kind": config.get("kind") or "trained",
        "train_seconds": history.get("seconds"),
        "history": history.get("epochs", []),
    }
    if export:
        cpu = (export.get("parity") or {}).get("cpu") or {}
        entry["export"] = {
            "exporter": (export.get("exporter") or {}).get("name"),
            "opset": export.get("opset"),
            "bytes": export.get("bytes"),
            "parity_passed": (export.get("parity") or {}).get("passed"),
            "max_abs": cpu.get("max_abs"),
            "max_rel": cpu.get("max_rel"),
            "atol": cpu.get("atol"),
            "rtol": cpu.get("rtol"),
            "cuda": (export.get("parity") or {}).get("cuda"),
        }
    if metrics:
        entry["test_sets"] = dict(test_sets or {})
        entry["latency"] = metrics["latency"] if isinstance(metrics.get("latency"), dict) else {}
        entry["runtime"] = metrics["runtime"] if isinstance(metrics.get("runtime"), dict) else {}
    if cam:
        entry["cam"] = _saliency_entry(folder, cam)
    entry["saliency"] = {prefix: _saliency_entry(folder, ev) for prefix, ev in (others or {}).items() if ev}
    if cam and entry["saliency"]:
        entry["agreement"] = {
            prefix: {split: method_agreement(entry["cam"], sal, split) for split in sal["images"]}
            for prefix, sal in entry["saliency"].items()
        }
    return entry


def build_report(run_dir: Path, thresholds: Thresholds | None = None) -> dict[str, Any]:
    run_dir = Path(run_dir)
    proto = read_protocol(run_dir)
    thresholds = thresholds or thresholds_of_run(run_dir)
    test_sets = list(proto["profile"].get("test_sets") or [])
    groups = collect(run_dir, proto["profile"])
    verdicts = judge(
        run_dir,
        thresholds,
        test_sets,
        proto.get("variants", []),
        str(proto["profile"].get("backbone", "")),
        proto["profile"],
    )
    matrix: dict[str, dict[str, Any]] = {}
    baselines: dict[str, Any] = {}
    variants: dict[str, Any] = {}
    for variant, runs in groups.items():
        matrix[variant] = {}
        for split in test_sets:
            # recomputed from the per-image predictions; a summary that disagrees with them is left out (its
            # verdicts are ERROR and say why)
            checked = {f"s{r.seed}": split_metrics(r, split) for r in runs}
            per = [s for s in checked.values() if s]
            if not per:
                continue
            baselines.setdefault(split, per[0]["baselines"])
            matrix[variant][split] = {
                kind: _stats([p[kind]["value"] for p in per])
                | {
                    "per_seed": {seed: s[kind]["value"] for seed, s in checked.items() if s},
                    "wilson_worst": min((p[kind]["wilson"] for p in per), key=lambda w: w[0]),
                    "k": [p[kind]["k"] for p in per],
                    "n": per[0]["n"],
                }
                for kind in ("soft", "strict")
            }
        for r in runs:
            trusted, left_out = trusted_splits(r)
            variants[r.folder.name] = _variant_entry(r.folder, r.metrics, r.cam, r.export, r.saliency, trusted) | {
                "problems": dict(r.problems) | {f"metrics.json {s}": why for s, why in left_out.items() if why}
            }
    gated_models = sorted({v.model for v in verdicts if v.gated and v.model})
    strength = evidence({"variants": variants, "protocol": proto}, gated_models, thresholds.selective.target)
    return {
        "schema": 1,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "evidence": strength,
        "run_dir": str(run_dir.resolve()),
        "verdict": overall(verdicts),
        "gated_variants": list(thresholds.gated),
        "verdicts": [v.to_dict() for v in verdicts],
        "judged": judged_table(verdicts),
        "matrix": matrix,
        "baselines": baselines,
        "protocol": proto | {"thresholds": thresholds.to_dict()},
        "thresholds_notes": list(proto.get("thresholds_notes") or []),
        "localization": localization_table(verdicts),
        "robustness": robustness_section(groups, verdicts),  # corruptions, object masking, faithfulness
        "variants": variants,
        "failed_jobs": failed_jobs(run_dir, proto),
        "models": model_table(verdicts, groups, proto),
        "audit": audit_report(run_dir, thresholds),  # can the test sets be trusted? (harness.audit, audit.json)
        "ladder": ladder(run_dir, groups, test_sets),  # constant -> kNN -> linear probe -> each model (baselines.json)
    }


def failed_jobs(run_dir: Path, proto: dict[str, Any]) -> list[dict[str, Any]]:
    """The jobs jobs.json records as failed whose folder is still incomplete (a job completed since, by a rerun or
    `harness train`, is no longer a failure): id, variant, seed, error, host, seconds; the traceback stays in
    jobs.json."""
    try:
        log = artifacts.read_json(Path(run_dir) / JOBS_FILE)
    except (FileNotFoundError, ValueError):
        return []
    entries = [
        e
        for e in ((log.get("jobs") or {}).values() if isinstance(log, dict) else [])
        if isinstance(e, dict) and e.get("status") == "failed"
    ]
    raw = proto.get("profile")
    prof: dict[str, Any] = raw if isinstance(raw, dict) else {}
    jobs = [(str(e.get("variant")), int(e["seed"])) for e in entries if isinstance(e.get("seed"), int)]
    complete = complete_jobs(run_dir, str(prof.get("backbone")), jobs, protocol_black_box(proto))
    keep = ("id", "variant", "seed", "error", "host", "seconds", "finished")
    return [
        {k: e.get(k) for k in keep}
        for e in sorted(entries, key=lambda e: str(e.get("id")))
        if (str(e.get("variant")), e.get("seed")) not in complete
    ]


def localization_table(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """One row per (model, method, test set): energy share and pointing rate, each beside its chance level, and the
    sanity check's correlation: the figures a reader compares, in one place."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    sanity: dict[tuple[str, str], Any] = {}
    for v in verdicts:
        c = CRITERIA.get(v.criterion)
        if c is None or c.family != LOCALIZATION:
            continue
        prefix, what = method_info(c.method).evidence, c.aspect
        if what == SANITY:
            sanity[(v.model, prefix)] = (v.value, v.status)
        else:
            row = rows.setdefault(
                (v.model, prefix, v.subject), {"model": v.model, "method": prefix, "split": v.subject, "gated": v.gated}
            )
            row[what] = v.value if v.value is not None else None
            row[f"{what}_chance"] = v.chance
            row[f"{what}_status"] = v.status
            row[f"{what}_threshold"] = v.threshold
            if v.value is None:
                row[f"{what}_detail"] = v.detail
    for (model, prefix, _), row in rows.items():
        value, status = sanity.get((model, prefix), (None, None))
        row["sanity_spearman"], row["sanity_status"] = value, status
    return list(rows.values())


def model_table(verdicts: list[Verdict], groups: dict[str, list[SeedRun]], proto: dict[str, Any]) -> dict[str, Any]:
    """model key -> its identity as fields, for every model judged or found: kind ('trained' or 'check'), backbone,
    variant, init and level of a trained model (None for a checked one), a checked model's name (None for a trained
    one), its seeds in the run and whether it is gated. Readers of report.json use these, never the key's parts."""
    models: dict[str, tuple[str, str, bool]] = {}
    for v in verdicts:
        if v.model:  # not the run's own verdicts (protocol)
            models.setdefault(v.model, (v.backbone, v.variant, v.gated))
    for key, runs in groups.items():
        models.setdefault(key, (runs[0].backbone, runs[0].variant, False))
    out: dict[str, Any] = {}
    for key, (backbone, variant, gated) in models.items():
        runs = groups.get(key, [])
        kind = runs[0].kind if runs else ("check" if proto.get("kind") == "check" else "trained")
        init = level = None
        if kind != "check":
            try:
                ident = ModelId.of(backbone, variant, 0)
                init, level = ident.init, ident.level
            except ConfigError:
                pass  # not '<init>-<level>': a name the protocol gave, judged ERROR (no folder has it)
        out[key] = {
            "kind": kind,
            "backbone": backbone,
            "variant": variant,
            "init": init,
            "level": level,
            "name": variant if kind == "check" else None,
            "seeds": sorted(r.seed for r in runs),
            "gated": gated,
        }
    return out


def write_reports(run_dir: Path, report: dict[str, Any]) -> tuple[Path, Path | None]:
    """report.json always, with the manifest of the files it stands on (harness.verify); report.html when the HTML
    renderer is available; summary.md and the gated models' model cards."""
    run_dir = Path(run_dir)
    report["manifest"] = manifest(run_dir)
    json_path = artifacts.write_json(run_dir / "report.json", report)
    html_path = artifacts.write_text(run_dir / "report.html", render_html(report, run_dir))
    write_cards(run_dir, report)  # cards/<model>/model-card.md of each gated model, then summary.md (CI summaries)
    artifacts.write_text(run_dir / SUMMARY, run_summary(report, run_dir))
    return json_path, html_path
