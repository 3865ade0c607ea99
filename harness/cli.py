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
                   help="override any profile field, e.g. --set image_size=96 --set phases.scratch[0].epochs=2 is not "
                        "supported; use dotted keys for tables: --set augment.zoom_out=2.5 (repeatable)")
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
