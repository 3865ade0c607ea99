"""What each `harness` command does (harness.cli parses the command line and dispatches here): call the harness,
print the outcome, return the exit code."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from harness import runlock
from harness.audit.command import audit_dataset
from harness.audit.statements import lines as audit_lines
from harness.backbones import check_weights_available
from harness.check import check_model
from harness.checkpoints import WeightsUnavailable
from harness.compare import compare_paths, write_compare
from harness.config import load_profile
from harness.data import MIN_TRAIN_PER_CLASS, DataError, load_train, working_short_side
from harness.doctor import BUNDLED_DATA
from harness.evaluate import evaluate_run
from harness.executors import executor_options
from harness.export import export_run
from harness.mlflow_log import client as mlflow_client
from harness.mlflow_log import fetch_report, is_reference, log_run, tracking_uri
from harness.report.build import build_report, thresholds_of_run, write_reports
from harness.report.markdown import SUMMARY, append_step_summary, compare_summary
from harness.report.model_card import keep_card, read_card
from harness.run import MatrixInterrupted, run_matrix
from harness.rundir import shown
from harness.runlock import RunLocked
from harness.saliency.gradcam_step import cam_run
from harness.thresholds import parse_thresholds
from harness.train import pick_device, train_variant
from harness.validate import ConfigError
from harness.variants import split_variant
from harness.verify import PROTOCOL, protocol_check, recorded_manifest, recording, unvouched
from harness.verify import check as check_manifest
from harness.weights import check_weights_file, fetch_weights, format_weights_table, weights_statuses

DEFAULT_DATA = BUNDLED_DATA  # where bundled_data looks: under the current folder, else under the project

# the errors a person can fix from the message alone: one line on stderr, exit 2 (no traceback)
USER_ERRORS = (ConfigError, DataError, WeightsUnavailable, RunLocked, FileNotFoundError, ValueError)


def bundled_data(data: Path | None) -> Path:
    """--data as given, or the bundled dataset: data/small-book-images under the current folder, else under the
    project the harness package was installed from (so a run from another folder still finds it)."""
    if data is not None:
        return data
    here = DEFAULT_DATA
    project = Path(__file__).resolve().parents[1] / DEFAULT_DATA
    for candidate in (here, project):
        if (candidate / "train").is_dir():
            return candidate
    raise DataError(
        f"the bundled dataset was not found: looked in {here.resolve()} and {project}; pass --data DIR "
        f"(a folder with train/<class>/ and test sets)"
    )


def _load_profile(args: argparse.Namespace):
    overrides = list(args.overrides) + ([f"backbone={args.backbone}"] if args.backbone else [])
    return load_profile(args.profile, overrides)


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r} must be comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds {text!r} must be one or more integers >= 0, e.g. --seeds 0,1,2")
    return seeds


def _variants(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def cmd_train(args: argparse.Namespace) -> int:
    profile = _load_profile(args)
    init, _ = split_variant(args.variant)
    pick_device(profile.device)
    if init == "imagenet":
        check_weights_available(profile.backbone, args.weights_file)
        check_weights_file(profile.backbone, args.weights_file)
    args.data = bundled_data(args.data)
    ds = load_train(args.data, max_short_side=working_short_side(profile.image_size), min_per_class=MIN_TRAIN_PER_CLASS)
    seeds = [args.seed] if args.seed is not None else list(profile.seeds)
    with runlock.hold(args.out), recording(args.out):
        for seed in seeds:
            vdir = train_variant(args.out, profile, ds, args.data, args.variant, seed, args.weights_file, args.force)
            print(vdir)
    return 0


def _existing_run(run_dir: Path) -> Path:
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    return Path(run_dir)


def cmd_cam(args: argparse.Namespace) -> int:
    splits = [x.strip() for x in args.splits.split(",") if x.strip()] if args.splits else None
    with runlock.hold(_existing_run(args.run_dir)), recording(args.run_dir):
        results = cam_run(args.run_dir, args.force, splits, data_root=args.data)
    for name, result in results.items():
        parts = []
        for split, s in result["summary"].items():
            if s["images_scored"]:
                parts.append(
                    f"{split}: {s['images_scored']} scored, {s['images_skipped']} skipped, "
                    f"pointing {s['pointing_hit_rate']:.2f}, energy {s['energy_share_mean']:.2f}, "
                    f"loc {s['localization_correct_rate']:.2f}"
                )
            else:
                parts.append(f"{split}: localization skipped ({s['images_skipped']} images)")
        print(f"{name}: " + "; ".join(parts))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with runlock.hold(_existing_run(args.run_dir)), recording(args.run_dir):
        records = export_run(args.run_dir, args.force, args.exporter, data_root=args.data)
    for rec in records:
        cpu = rec["parity"]["cpu"]
        print(
            f"{rec['variant']}: {rec['model']} ({rec['exporter']['name']}, opset {rec['opset']}) parity "
            f"{'passed' if rec['parity']['passed'] else 'FAILED'}: cpu max_abs {cpu['max_abs']:.2e} "
            f"max_rel {cpu['max_rel']:.2e}" + (" (already exported)" if rec.get("skipped") else "")
        )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    with runlock.hold(_existing_run(args.run_dir)), recording(args.run_dir):
        results = evaluate_run(args.run_dir, args.provider, args.repeats, data_root=args.data)
    for m in results:
        sets = "; ".join(
            f"{k}: soft {v['soft']['value']:.3f} strict {v['strict']['value']:.3f} (n={v['n']})"
            for k, v in m["test_sets"].items()
        )
        print(f"{m['variant']} [{', '.join(m['runtime']['providers'])}]: {sets}")
    return 0


def _thresholds(profile, user_file):
    return parse_thresholds(profile.thresholds, profile.source, user_file)


def _print_verdicts(report: dict) -> None:
    """The gated verdicts one line each, one line counting the others (ablations: reported, never failing the
    gate; each is in report.html), then the overall verdict."""
    rest: Counter[str] = Counter()
    for v in report["verdicts"]:
        if not v["gated"]:
            rest[v["status"]] += 1
            continue
        value = "-" if v["value"] is None else f"{v['value']:.4g}"
        thr = "-" if v["threshold"] is None else f"{v['threshold']:.4g}"
        print(f"{v['status']:5} GATE {v['criterion']}[{v['id']}] {value} {v['comparison']} {thr}  {v['detail']}")
    if rest:
        order = {"PASS": 0, "FAIL": 1, "ERROR": 2, "SKIP": 3}
        counts = ", ".join(f"{rest[s]} {s}" for s in sorted(rest, key=lambda s: (order.get(s, len(order)), s)))
        total = sum(rest.values())
        print(f"ablations: {total} verdict{'' if total == 1 else 's'} ({counts}); details in report.html")
    print(f"verdict: {report['verdict']}")


def cmd_run(args: argparse.Namespace) -> int:
    profile = _load_profile(args)
    variants = _variants(args.variants)
    seeds = _seeds(args.seeds)
    if args.out is not None and args.new:
        raise ConfigError(
            f"--new starts a fresh run in a new folder under reports/runs/; it cannot be combined "
            f"with --out {args.out} (drop one of them)"
        )
    executor = executor_options(args.executor, args.ray_address, args.job_cpus, args.job_gpus, args.max_retries)
    _check_integrations(args)
    try:
        report = run_matrix(
            profile,
            _thresholds(profile, args.thresholds),
            bundled_data(args.data),
            args.out,
            variants,
            seeds,
            args.weights_file,
            args.force,
            new=args.new,
            executor=executor,
            thresholds_file=args.thresholds,
        )
    except MatrixInterrupted as exc:
        if exc.still_running:
            print(
                f"warning: Ray did not confirm that {len(exc.still_running)} cancelled job(s) stopped: "
                f"{', '.join(exc.still_running)}; they may still write into their folders of {shown(exc.run_dir)}. "
                f"Check with `ray list tasks --filter state=RUNNING` (or the Ray dashboard) and wait for them to "
                f"end before rerunning",
                file=sys.stderr,
            )
        print(f"interrupted: rerun the same command to resume ({shown(exc.run_dir)})", file=sys.stderr)
        return 130
    _print_verdicts(report)
    failed = report.get("failed_jobs") or []
    for job in failed:
        print(f"FAILED JOB {job['id']}: {job['error']}")
    if failed:
        print(f"{len(failed)} job(s) failed (tracebacks in jobs.json); rerun the same command to retry them")
    where = Path(args.out or shown(Path(report["run_dir"])))
    print(f"report: {where / 'report.html'}")
    _integrations(args, Path(report["run_dir"]), report, where)
    return 1 if report["verdict"] in ("FAIL", "ERROR") or failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    _check_integrations(args)
    report, run_dir = check_model(
        args.model, bundled_data(args.data), args.spec, args.set, args.profile, args.thresholds, args.out
    )
    _print_verdicts(report)
    print(f"report: {run_dir / 'report.html'}")
    _integrations(args, Path(run_dir), report, Path(run_dir))
    return 1 if report["verdict"] in ("FAIL", "ERROR") else 0


def cmd_audit(args: argparse.Namespace) -> int:
    result = audit_dataset(bundled_data(args.data), args.out, args.profile, args.thresholds, args.force)
    for note in result.notes:
        print(f"note: {note}")
    print("\n".join(audit_lines(result.summary)))
    for v in result.verdicts:
        value = "-" if v.value is None else f"{v.value:.3g}"
        thr = "-" if v.threshold is None else f"{v.threshold:.3g}"
        tag = "GATE" if v.gated else "    "
        print(f"{v.status:5} {tag} {v.criterion}[{v.id}] {value} {v.comparison} {thr}  {v.detail}")
    print(f"audit: {result.out / 'audit.json'}")
    return 1 if result.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    thresholds = thresholds_of_run(args.run_dir, args.thresholds)
    with runlock.hold(args.run_dir):
        refused = unvouched(args.run_dir)  # hand edits since the report (or since harness wrote them): never judged
        if refused:
            for line in refused:
                print(f"REFUSED {line}", file=sys.stderr)
            n = len(refused)
            print(
                f"harness report: refused: {n} evidence file{' was' if n == 1 else 's were'} edited since harness "
                f"wrote {'it' if n == 1 else 'them'} (neither report.json's manifest nor a harness step vouches for "
                f"{'it' if n == 1 else 'them'}); report.json is left as it was",
                file=sys.stderr,
            )
            return 1
        keep_card(args.run_dir, args.card)  # the owner's [card] table, read by every later report too
        report = build_report(args.run_dir, thresholds)
        write_reports(args.run_dir, report)
    summary = (args.run_dir / SUMMARY).read_text(encoding="utf-8")
    if args.format == "markdown":
        print(summary)
    else:
        _print_verdicts(report)
        print(f"report: {args.run_dir / 'report.html'}")
    append_step_summary(summary)
    return 1 if report["verdict"] in ("FAIL", "ERROR") else 0


def cmd_verify(args: argparse.Namespace) -> int:
    run_dir = _existing_run(args.run_dir)
    recorded, why = recorded_manifest(run_dir)
    if recorded is None:
        print(f"verify: {why}")
        return 1
    problems, protocol = check_manifest(run_dir, recorded), protocol_check(run_dir)
    for line in problems:
        print(f"MISMATCH {line}")
    for line in protocol:
        print(f"ERROR {line}")
    if problems or protocol:
        n, m = len(problems), len(protocol)
        said = [f"{n} file{' differs' if n == 1 else 's differ'} from the manifest"] if n else []
        said += [f"{m} protocol problem{'' if m == 1 else 's'}"] if m else []
        print(f"verify: {' and '.join(said)} of {run_dir}")
        return 1
    print(f"verified {sum(1 for k in recorded if k != PROTOCOL)} files in {run_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if is_reference(args.new) and args.out is None:
        raise ConfigError(f"NEW is an MLflow run ({args.new}): give --out DIR for compare.json / compare.html")
    with tempfile.TemporaryDirectory(prefix="harness-mlflow-") as tmp:  # an MLflow side's report.json, downloaded
        base, new = fetch_report(args.baseline, Path(tmp)), fetch_report(args.new, Path(tmp))
        result, _ = compare_paths(base, new, args.thresholds)
        _, html_path = write_compare(result, args.out)
    append_step_summary(compare_summary(result))
    for r in result["regressions"]:
        where = f" {r['subject']}" if r["subject"] else ""
        print(f"REGRESSION {r['kind']} {r['model']}{where}: {r['detail']}")
    for c in result["verdict_changes"]:
        value = lambda v: "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
        print(
            f"verdict {c['baseline'] or 'absent'} -> {c['new'] or 'absent'} {c['criterion']}[{c['id']}] "
            f"{value(c['baseline_value'])} -> {value(c['new_value'])}"
        )
    same = result.get("same_run")  # BASELINE and NEW are one run: an OK that means nothing
    print(f"compare: {result['verdict']}" + (f" ({same})" if same else ""))
    print(f"report: {html_path}")
    return 1 if result["verdict"] == "REGRESSION" else 0


def _check_integrations(args: argparse.Namespace) -> None:
    """--card and --mlflow checked before any work: a bad card file or a missing MLflow fails in a second."""
    if args.card is not None:
        read_card(args.card)
    if args.mlflow:
        mlflow_client(tracking_uri())


def _integrations(args: argparse.Namespace, run_dir: Path, report: dict, shown_as: Path) -> None:
    """Once a run's report is written: the owner's card into it (cards rewritten), and MLflow (--mlflow); the last
    line names summary.md as the report line names the run (`shown_as`). (summary.md goes to a CI job page with
    `harness report RUN --format markdown`.)"""
    if args.card is not None:
        with runlock.hold(run_dir):
            keep_card(run_dir, args.card)
            write_reports(run_dir, report)
    if args.mlflow:
        with runlock.hold(run_dir):
            logged = log_run(run_dir)
        print(
            f"mlflow: {'updated' if logged.reused else 'logged'} run {logged.run_id} ({len(logged.models)} model "
            f"run(s)) in {logged.tracking_uri}"
        )
    print(f"summary: {shown_as / SUMMARY}")


def cmd_weights_list(args: argparse.Namespace) -> int:
    print(format_weights_table(weights_statuses()))
    return 0


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    result = fetch_weights(args.backbone, args.url, progress=not args.no_progress)
    print(result.message)
    return 0 if result.ok else 1


# the command line's commands (a `weights` subcommand as "weights list") -> what runs them; `doctor` is harness.cli's
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "cam": cmd_cam,
    "export": cmd_export,
    "evaluate": cmd_evaluate,
    "run": cmd_run,
    "check": cmd_check,
    "audit": cmd_audit,
    "report": cmd_report,
    "verify": cmd_verify,
    "compare": cmd_compare,
    "weights list": cmd_weights_list,
    "weights fetch": cmd_weights_fetch,
}
