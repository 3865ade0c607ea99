"""Command line: harness train | export | evaluate | cam | run | check | compare | report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_DATA = Path("data/small-book-images")


def bundled_data(data: Path | None) -> Path:
    """--data as given, or the bundled dataset: data/small-book-images under the current folder, else under the
    project the harness package was installed from (so a run from another folder still finds it)."""
    from harness.data import DataError

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


def _add_profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="smoke", help="built-in profile name (smoke, cpu, full) or a .toml path")
    p.add_argument("--backbone", help="override the profile's backbone (vgg16, efficientnet_lite0)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile field (repeatable); values are TOML literals, tables use dotted keys: "
        "--set image_size=160 --set augment.zoom_out=2.0 --set seeds=[0,1]",
    )
    p.add_argument("--data", type=Path, default=None, help=f"dataset root (default: the bundled {DEFAULT_DATA})")
    p.add_argument("--weights-file", type=Path, help="explicit ImageNet weights file for the backbone (VGG16)")


def _add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, help="dataset root, for a run whose dataset moved (default: the recorded one)")


def _load_profile(args: argparse.Namespace):
    from harness.config import load_profile

    overrides = list(args.overrides) + ([f"backbone={args.backbone}"] if args.backbone else [])
    return load_profile(args.profile, overrides)


def _seeds(text: str | None) -> list[int] | None:
    from harness.validate import ConfigError

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
    from harness import runlock
    from harness.backbones import check_weights_available
    from harness.config import split_variant
    from harness.data import load_train, working_short_side
    from harness.train import pick_device, train_variant

    profile = _load_profile(args)
    init, _ = split_variant(args.variant)
    pick_device(profile.device)
    if init == "imagenet":
        check_weights_available(profile.backbone, args.weights_file)
    args.data = bundled_data(args.data)
    ds = load_train(args.data, max_short_side=working_short_side(profile.image_size))
    seeds = [args.seed] if args.seed is not None else list(profile.seeds)
    with runlock.hold(args.out):
        for seed in seeds:
            vdir = train_variant(args.out, profile, ds, args.data, args.variant, seed, args.weights_file, args.force)
            print(vdir)
    return 0


def _existing_run(run_dir: Path) -> Path:
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    return Path(run_dir)


def cmd_cam(args: argparse.Namespace) -> int:
    from harness import runlock
    from harness.saliency.gradcam_step import cam_run

    splits = [x.strip() for x in args.splits.split(",") if x.strip()] if args.splits else None
    with runlock.hold(_existing_run(args.run_dir)):
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
    from harness import runlock
    from harness.export import export_run

    with runlock.hold(_existing_run(args.run_dir)):
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
    from harness import runlock
    from harness.evaluate import evaluate_run

    with runlock.hold(_existing_run(args.run_dir)):
        results = evaluate_run(args.run_dir, args.provider, args.repeats, data_root=args.data)
    for m in results:
        sets = "; ".join(
            f"{k}: soft {v['soft']['value']:.3f} strict {v['strict']['value']:.3f} (n={v['n']})"
            for k, v in m["test_sets"].items()
        )
        print(f"{m['variant']} [{', '.join(m['runtime']['providers'])}]: {sets}")
    return 0


def _thresholds(profile, user_file):
    from harness.thresholds import parse_thresholds

    return parse_thresholds(profile.thresholds, profile.source, user_file)


def _print_verdicts(report: dict) -> None:
    """The gated verdicts one line each, one line counting the others (ablations: reported, never failing the
    gate; each is in report.html), then the overall verdict."""
    from collections import Counter

    rest = Counter()
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
    from harness.run import MatrixInterrupted, run_matrix, shown

    profile = _load_profile(args)
    variants = _variants(args.variants)
    seeds = _seeds(args.seeds)
    if args.out is not None and args.new:
        from harness.validate import ConfigError

        raise ConfigError(
            f"--new starts a fresh run in a new folder under reports/runs/; it cannot be combined "
            f"with --out {args.out} (drop one of them)"
        )
    from harness.executors import executor_options

    executor = executor_options(args.executor, args.ray_address, args.job_cpus, args.job_gpus, args.max_retries)
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
    print(f"report: {Path(args.out or shown(Path(report['run_dir']))) / 'report.html'}")
    return 1 if report["verdict"] in ("FAIL", "ERROR") or failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    from harness.check import check_model

    report, run_dir = check_model(
        args.model, bundled_data(args.data), args.spec, args.set, args.profile, args.thresholds, args.out
    )
    _print_verdicts(report)
    print(f"report: {run_dir / 'report.html'}")
    return 1 if report["verdict"] in ("FAIL", "ERROR") else 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness import runlock
    from harness.report.build import build_report, thresholds_of_run, write_reports

    thresholds = thresholds_of_run(args.run_dir, args.thresholds)
    with runlock.hold(args.run_dir):
        report = build_report(args.run_dir, thresholds)
        write_reports(args.run_dir, report)
    _print_verdicts(report)
    print(f"report: {args.run_dir / 'report.html'}")
    return 1 if report["verdict"] in ("FAIL", "ERROR") else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.compare import compare_paths, write_compare

    result, _ = compare_paths(args.baseline, args.new, args.thresholds)
    _, html_path = write_compare(result, args.out)
    for r in result["regressions"]:
        where = f" {r['subject']}" if r["subject"] else ""
        print(f"REGRESSION {r['kind']} {r['model']}{where}: {r['detail']}")
    for c in result["verdict_changes"]:
        value = lambda v: "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
        print(
            f"verdict {c['baseline'] or 'absent'} -> {c['new'] or 'absent'} {c['criterion']}[{c['id']}] "
            f"{value(c['baseline_value'])} -> {value(c['new_value'])}"
        )
    print(f"compare: {result['verdict']}")
    print(f"report: {html_path}")
    return 1 if result["verdict"] == "REGRESSION" else 0


def cmd_weights_list(args: argparse.Namespace) -> int:
    from harness.weights import format_weights_table, weights_statuses

    print(format_weights_table(weights_statuses()))
    return 0


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from harness.weights import fetch_weights

    result = fetch_weights(args.backbone, args.url, progress=not args.no_progress)
    print(result.message)
    return 0 if result.ok else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.doctor import exit_code, format_checks, run_checks

    checks = run_checks()
    print(format_checks(checks))
    return exit_code(checks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    parser.add_argument(
        "--version", action="version", version=_version_line(), help="print the harness version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "train", help="train one variant (init-level, e.g. imagenet-all) into OUT/<backbone>-<variant>-s<seed>/"
    )
    _add_profile_args(p)
    p.add_argument("--variant", required=True, help="scratch|imagenet x none|usual|mixup|all, e.g. imagenet-all")
    p.add_argument("--seed", type=int, help="one seed (default: the profile's seeds)")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--force", action="store_true", help="retrain even if model.pt exists")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cam", help="Grad-CAM maps, localization scores and overlays for every variant of RUN_DIR")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory holding <backbone>-<variant>-s<seed>/")
    p.add_argument("--force", action="store_true", help="redo variants that already have a cam.json")
    p.add_argument("--splits", help="comma-separated test sets (default: the profile's test_sets), e.g. test_difficult")
    _add_data_arg(p)
    p.set_defaults(func=cmd_cam)

    p = sub.add_parser("export", help="export every trained variant of RUN_DIR to model.onnx, with checker and parity")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory holding <backbone>-<variant>-s<seed>/")
    p.add_argument("--force", action="store_true", help="re-export variants whose model.onnx already passed parity")
    p.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript"),
        default="dynamo",
        help="torch.onnx exporter (default dynamo; torchscript is the legacy fallback)",
    )
    _add_data_arg(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="evaluate every exported variant of RUN_DIR with onnxruntime -> metrics.json")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory holding <backbone>-<variant>-s<seed>/")
    p.add_argument(
        "--provider",
        choices=("auto", "cpu", "cuda", "tensorrt"),
        default="auto",
        help="onnxruntime provider: auto = CUDA when a GPU is usable, else CPU",
    )
    p.add_argument("--repeats", type=int, default=10, help="timed runs per batch size for latency (median reported)")
    _add_data_arg(p)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("run", help="the whole matrix: train, export, evaluate, cam, verdicts, report (resumable)")
    _add_profile_args(p)
    p.add_argument("--variants", help="comma-separated subset, e.g. imagenet-all,scratch-all (default: the profile's)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the profile's)")
    p.add_argument(
        "--out",
        type=Path,
        help="run directory (default: resume the latest run under reports/runs/ when "
        "the same command made it and it is incomplete, else a new "
        "reports/runs/<time>-<profile>-<backbone>)",
    )
    p.add_argument("--new", action="store_true", help="start a fresh run even where the latest one could be resumed")
    p.add_argument("--thresholds", type=Path, help="TOML file overriding the profile's thresholds")
    p.add_argument("--force", action="store_true", help="redo every step even where its artifacts exist")
    p.add_argument(
        "--executor",
        choices=("serial", "ray"),
        default="serial",
        help="serial (default): one job after another here; ray: each (variant, seed) a Ray task "
        "(pip install 'harness[ray]'), on a local Ray or the cluster at --ray-address",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --executor ray: a running cluster's head (HOST:6379, or auto on a cluster node); "
        "default: a local Ray started for this run with every CPU and GPU here",
    )
    p.add_argument(
        "--job-cpus",
        metavar="N",
        help="with --executor ray: CPUs per job, also its torch/onnxruntime thread count (default 1)",
    )
    p.add_argument(
        "--job-gpus",
        metavar="F",
        help="with --executor ray: GPUs per job; a fraction packs several jobs "
        "on one GPU (0.125: eight); default 1 when the cluster has GPUs, "
        "else 0",
    )
    p.add_argument(
        "--max-retries",
        metavar="N",
        help="with --executor ray: retries of a job whose worker died "
        "(killed, out of memory, node lost; default 3); a job that "
        "raises is never retried",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check",
        help="gate any ONNX image classifier on a dataset: accuracy beside its baselines, "
        "black-box localization beside chance, latency -> a run directory and report",
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help="the ONNX model file")
    p.add_argument("--data", type=Path, default=None, help=f"dataset root (default: the bundled {DEFAULT_DATA})")
    p.add_argument(
        "--spec",
        type=Path,
        help="TOML file with the model's input/output contract (layout, size, dtype, "
        "value_range, mean, std, channels, resize, output_kind, classes)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='a spec field (layout="NHWC") or a check-profile field (saliency.occlusion.stride=32); '
        "TOML values; repeatable",
    )
    p.add_argument("--profile", default="check", help="check profile: built-in `check` or a .toml path")
    p.add_argument("--thresholds", type=Path, help="TOML file overriding the profile's thresholds")
    p.add_argument("--out", type=Path, help="run directory (default reports/runs/<time>-check-<model>)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("report", help="recompute verdicts and rewrite report.json / report.html of RUN_DIR")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--thresholds", type=Path, help="TOML file overriding the thresholds recorded in run.json")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "compare",
        help="what changed from BASELINE to NEW (run directories or report.json files): "
        "paired accuracy, flipped photos, McNemar p; exit 1 on a regression",
    )
    p.add_argument("baseline", type=Path, metavar="BASELINE", help="run directory or report.json of the reference run")
    p.add_argument("new", type=Path, metavar="NEW", help="run directory or report.json of the run to judge")
    p.add_argument(
        "--thresholds",
        type=Path,
        help="TOML file overriding NEW's recorded thresholds ([thresholds.regression] max_drop, mcnemar_p; gated)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="folder for compare.json / compare.html (default NEW_RUN_DIR/compare-<baseline run directory name>/)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "weights",
        help="backbone ImageNet weights: list what each needs and whether it is here; "
        "fetch VGG16's into the torch hub cache (the only command that downloads)",
    )
    wsub = p.add_subparsers(dest="weights_command", required=True)
    w = wsub.add_parser("list", help="per backbone: the weights file, where it is looked for, size, source, present?")
    w.set_defaults(func=cmd_weights_list)
    w = wsub.add_parser(
        "fetch",
        help="download a backbone's ImageNet weights with torchvision's downloader into "
        "$TORCH_HOME/hub/checkpoints/ (sha256 checked against the file name)",
    )
    w.add_argument("backbone", metavar="BACKBONE", help="a registered backbone, e.g. vgg16")
    w.add_argument(
        "--url",
        help="download from this URL instead of the published one (file name "
        "<name>-<sha256 prefix>.pth, e.g. a mirror or a file:// URL)",
    )
    w.add_argument("--no-progress", action="store_true", help="no byte progress bar")
    w.set_defaults(func=cmd_weights_fetch)

    p = sub.add_parser(
        "doctor",
        help="is this machine ready? versions, GPU, threads, weights, Chromium, dataset: "
        "OK / WARN / FAIL with a fix each; exit 1 on a FAIL",
    )
    p.set_defaults(func=cmd_doctor)
    return parser


def _version_line() -> str:
    from harness import __version__

    return f"harness {__version__}"


def _main_without_torch(argv: list[str]) -> int | None:
    """`harness --version` and `harness doctor` run before main's imports (which import torch): both must work, and
    say what is wrong, where torch cannot be imported. None: any other command line, for main to handle."""
    rest = [a for a in argv if a != "--debug"]
    if rest == ["--version"]:
        print(_version_line())
        return 0
    if rest[:1] == ["doctor"]:
        args = build_parser().parse_args(rest)
        return args.func(args)
    return None


def _log_dir(args: argparse.Namespace) -> Path:
    """Where a crash's traceback goes: the run directory when the command has one that exists, else the temp dir."""
    import tempfile

    for attr in ("run_dir", "out"):
        d = getattr(args, attr, None)
        if d is not None and Path(d).is_dir():
            return Path(d)
    return Path(tempfile.gettempdir())


def _write_traceback(args: argparse.Namespace) -> Path:
    import datetime as _dt
    import traceback

    path = _log_dir(args) / f"harness-error-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.log"
    try:
        path.write_text(f"harness {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}", encoding="utf-8")
    except OSError:
        return Path("<not written>")
    return path


def main(argv: list[str] | None = None) -> int:
    early = _main_without_torch(list(sys.argv[1:] if argv is None else argv))
    if early is not None:
        return early
    from harness.backbones import WeightsUnavailable
    from harness.data import DataError
    from harness.runlock import RunLocked
    from harness.validate import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        return args.func(args)
    except (ConfigError, DataError, WeightsUnavailable, RunLocked, FileNotFoundError, ValueError) as exc:
        if args.debug:
            raise
        print(f"harness {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed artifacts are kept, rerun to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one line, the traceback in a file
        if args.debug:
            raise
        log = _write_traceback(args)
        where = exc.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        at = f" at {Path(where.tb_frame.f_code.co_filename).name}:{where.tb_lineno}" if where is not None else ""
        print(
            f"harness {args.command}: unexpected {type(exc).__name__}{at}: {str(exc).splitlines()[0] if str(exc) else ''}"
            f" (a harness bug; traceback written to {log}; rerun with --debug to see it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
