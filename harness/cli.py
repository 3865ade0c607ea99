"""Command line: harness train | export | evaluate | cam | run | report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_DATA = Path("data/small-book-images")


def _add_profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="smoke", help="built-in profile name (smoke, cpu, full) or a .toml path")
    p.add_argument("--backbone", help="override the profile's backbone (vgg16, efficientnet_lite0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile field (repeatable); values are TOML literals, tables use dotted keys: "
                        "--set image_size=160 --set augment.zoom_out=2.0 --set seeds=[0,1]")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"dataset root (default {DEFAULT_DATA})")
    p.add_argument("--weights-file", type=Path, help="explicit ImageNet weights file for the backbone (VGG16)")


def _load_profile(args: argparse.Namespace):
    from harness.config import load_profile

    overrides = list(args.overrides) + ([f"backbone={args.backbone}"] if args.backbone else [])
    return load_profile(args.profile, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from harness.config import split_variant
    from harness.data import load_train
    from harness.train import train_variant

    profile = _load_profile(args)
    split_variant(args.variant)
    ds = load_train(args.data)
    seeds = [args.seed] if args.seed is not None else list(profile.seeds)
    for seed in seeds:
        vdir = train_variant(args.out, profile, ds, args.data, args.variant, seed, args.weights_file, args.force)
        print(vdir)
    return 0


def cmd_cam(args: argparse.Namespace) -> int:
    from harness.camcheck import cam_run

    splits = [x.strip() for x in args.splits.split(",") if x.strip()] if args.splits else None
    for name, result in cam_run(args.run_dir, args.force, splits).items():
        parts = []
        for split, s in result["summary"].items():
            if s["images_scored"]:
                parts.append(f"{split}: {s['images_scored']} scored, {s['images_skipped']} skipped, "
                             f"pointing {s['pointing_hit_rate']:.2f}, energy {s['energy_share_mean']:.2f}, "
                             f"loc {s['localization_correct_rate']:.2f}")
            else:
                parts.append(f"{split}: localization skipped ({s['images_skipped']} images)")
        print(f"{name}: " + "; ".join(parts))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness.export import export_run

    for rec in export_run(args.run_dir, args.force, args.exporter):
        cpu = rec["parity"]["cpu"]
        print(f"{rec['variant']}: {rec['model']} ({rec['exporter']['name']}, opset {rec['opset']}) parity "
              f"{'passed' if rec['parity']['passed'] else 'FAILED'}: cpu max_abs {cpu['max_abs']:.2e} "
              f"max_rel {cpu['max_rel']:.2e}" + (" (already exported)" if rec.get("skipped") else ""))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from harness.evaluate import evaluate_run

    for m in evaluate_run(args.run_dir, args.provider, args.repeats):
        sets = "; ".join(f"{k}: soft {v['soft']['value']:.3f} strict {v['strict']['value']:.3f} (n={v['n']})"
                         for k, v in m["test_sets"].items())
        print(f"{m['variant']} [{', '.join(m['runtime']['providers'])}]: {sets}")
    return 0


def _thresholds(profile, user_file):
    from harness.thresholds import parse_thresholds

    return parse_thresholds(profile.thresholds, profile.source, user_file)


def _print_verdicts(report: dict) -> None:
    for v in report["verdicts"]:
        kind = "GATE" if v["gated"] else "info"
        value = "-" if v["value"] is None else f"{v['value']:.4g}"
        thr = "-" if v["threshold"] is None else f"{v['threshold']:.4g}"
        print(f"{v['status']:5} {kind} {v['criterion']}[{v['id']}] {value} {v['comparison']} {thr}  {v['detail']}")
    print(f"verdict: {report['verdict']}")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.run import default_run_dir, run_matrix

    profile = _load_profile(args)
    variants = args.variants.split(",") if args.variants else None
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    out = args.out or default_run_dir(profile)
    report = run_matrix(profile, _thresholds(profile, args.thresholds), args.data, out, variants, seeds,
                        args.weights_file, args.force)
    _print_verdicts(report)
    print(f"report: {out / 'report.html'}")
    return 1 if report["verdict"] in ("FAIL", "ERROR") else 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.build import build_report, thresholds_of_run, write_reports

    report = build_report(args.run_dir, thresholds_of_run(args.run_dir, args.thresholds))
    write_reports(args.run_dir, report)
    _print_verdicts(report)
    print(f"report: {args.run_dir / 'report.html'}")
    return 1 if report["verdict"] in ("FAIL", "ERROR") else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one variant (init-level, e.g. imagenet-all) into OUT/<backbone>-<variant>-s<seed>/")
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
    p.set_defaults(func=cmd_cam)

    p = sub.add_parser("export", help="export every trained variant of RUN_DIR to model.onnx, with checker and parity")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory holding <backbone>-<variant>-s<seed>/")
    p.add_argument("--force", action="store_true", help="re-export variants whose model.onnx already passed parity")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                   help="torch.onnx exporter (default dynamo; torchscript is the legacy fallback)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="evaluate every exported variant of RUN_DIR with onnxruntime -> metrics.json")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory holding <backbone>-<variant>-s<seed>/")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto",
                   help="onnxruntime provider: auto = CUDA when a GPU is usable, else CPU")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per batch size for latency (median reported)")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("run", help="the whole matrix: train, export, evaluate, cam, verdicts, report (resumable)")
    _add_profile_args(p)
    p.add_argument("--variants", help="comma-separated subset, e.g. imagenet-all,scratch-all (default: the profile's)")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the profile's)")
    p.add_argument("--out", type=Path, help="run directory (default reports/runs/<time>-<profile>-<backbone>)")
    p.add_argument("--thresholds", type=Path, help="TOML file overriding the profile's thresholds")
    p.add_argument("--force", action="store_true", help="redo every step even where its artifacts exist")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="recompute verdicts and rewrite report.json / report.html of RUN_DIR")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--thresholds", type=Path, help="TOML file overriding the thresholds recorded in run.json")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    from harness.backbones import WeightsUnavailable
    from harness.config import ConfigError
    from harness.data import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, WeightsUnavailable, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"harness {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed artifacts are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
