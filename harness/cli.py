"""Command line: harness train | export | evaluate | cam | run | check | audit | compare | report | verify."""

# This module parses the command line and dispatches; harness.cli_commands runs each command. (The docstring above is
# `harness --help`'s description.) `harness --version` and `harness doctor` run where torch, or anything else the
# commands need, cannot be imported: both are handled here first, and say what is wrong.

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from harness import __version__
from harness.doctor import BUNDLED_DATA, exit_code, format_checks, run_checks

# The commands need torch and the whole harness. A broken install must not stop --version and doctor, so an import
# failure is kept here and raised again when any other command runs (as an import inside main used to).
_IMPORT_ERROR: Exception | None = None
try:
    from harness.cli_commands import COMMANDS, USER_ERRORS
except Exception as exc:  # noqa: BLE001 - whatever a broken install raises (ImportError, OSError from a library)
    _IMPORT_ERROR = exc


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
    p.add_argument("--data", type=Path, default=None, help=f"dataset root (default: the bundled {BUNDLED_DATA})")
    p.add_argument("--weights-file", type=Path, help="explicit ImageNet weights file for the backbone (VGG16)")


def _add_integration_args(p: argparse.ArgumentParser) -> None:
    """--mlflow and --card of harness run / harness check."""
    p.add_argument(
        "--mlflow",
        action="store_true",
        help="log the run to MLflow ($MLFLOW_TRACKING_URI, else reports/mlflow/mlflow.db): one MLflow run, a nested "
        "run per model; a rerun updates it (pip install 'smallset-harness[mlflow]')",
    )
    p.add_argument(
        "--card",
        type=Path,
        metavar="FILE",
        help="TOML file whose [card] table (owner, license, intended_use, out_of_scope, description, limitations, "
        "contact, tags) fills the gated models' model cards",
    )


def _add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, help="dataset root, for a run whose dataset moved (default: the recorded one)")


def cmd_doctor(args: argparse.Namespace) -> int:
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

    p = sub.add_parser("cam", help="Grad-CAM maps, localization scores and overlays for every variant of RUN_DIR")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory holding <backbone>-<variant>-s<seed>/")
    p.add_argument("--force", action="store_true", help="redo variants that already have a cam.json")
    p.add_argument("--splits", help="comma-separated test sets (default: the profile's test_sets), e.g. test_difficult")
    _add_data_arg(p)

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
    _add_integration_args(p)

    p = sub.add_parser(
        "check",
        help="gate any ONNX image classifier on a dataset: accuracy beside its baselines, "
        "black-box localization beside chance, latency -> a run directory and report",
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help="the ONNX model file")
    p.add_argument("--data", type=Path, default=None, help=f"dataset root (default: the bundled {BUNDLED_DATA})")
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
    _add_integration_args(p)

    p = sub.add_parser(
        "audit",
        help="can the test sets be trusted? near copies of training images (exact, perceptual hash, frozen ImageNet "
        "features beside the training set's own spread), label suspects (cleanlab), dataset health -> OUT/audit.json; "
        "exit 1 when a gated data criterion fails",
    )
    p.add_argument("--data", type=Path, default=None, help=f"dataset root (default: the bundled {BUNDLED_DATA})")
    p.add_argument(
        "--out", type=Path, help="folder for audit.json (default reports/audit/<dataset folder>; a run directory too)"
    )
    p.add_argument(
        "--profile",
        default="cpu",
        help="profile whose [thresholds.audit] judges (default cpu); an --out run directory uses its own thresholds",
    )
    p.add_argument("--thresholds", type=Path, help="TOML file overriding the profile's thresholds ([thresholds.audit])")
    p.add_argument("--force", action="store_true", help="recompute the audit even where audit.json is current")

    p = sub.add_parser("report", help="recompute verdicts and rewrite report.json / report.html of RUN_DIR")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--thresholds", type=Path, help="TOML file overriding the thresholds recorded in run.json")
    p.add_argument(
        "--format",
        choices=("text", "markdown"),
        default="text",
        help="what to print: the verdict lines (text) or summary.md (markdown: verdict, gated criteria, accuracy "
        "beside the baselines, artefacts; for a CI job summary)",
    )
    p.add_argument("--card", type=Path, metavar="FILE", help="TOML file whose [card] table fills the model cards")

    p = sub.add_parser(
        "verify",
        help="are RUN_DIR's files the ones its report.json was written from? (sha256 manifest; exit 1 naming each "
        "file that changed, went missing or appeared)",
    )
    p.add_argument("run_dir", type=Path)

    p = sub.add_parser(
        "compare",
        help="what changed from BASELINE to NEW (run directories or report.json files): "
        "paired accuracy, flipped photos, McNemar p; exit 1 on a regression",
    )
    p.add_argument(
        "baseline",
        type=Path,
        metavar="BASELINE",
        help="run directory or report.json of the reference run, or mlflow:<run id> (a run logged with --mlflow)",
    )
    p.add_argument("new", type=Path, metavar="NEW", help="run directory, report.json or mlflow:<run id> to judge")
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

    p = sub.add_parser(
        "weights",
        help="backbone ImageNet weights: list what each needs and whether it is here; "
        "fetch VGG16's into the torch hub cache (the only command that downloads)",
    )
    wsub = p.add_subparsers(dest="weights_command", required=True)
    w = wsub.add_parser("list", help="per backbone: the weights file, where it is looked for, size, source, present?")
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

    p = sub.add_parser(
        "doctor",
        help="is this machine ready? versions, GPU, threads, weights, Chromium, dataset: "
        "OK / WARN / FAIL with a fix each; exit 1 on a FAIL",
    )
    return parser


def _version_line() -> str:
    return f"harness {__version__}"


def _main_without_torch(argv: list[str]) -> int | None:
    """`harness --version` and `harness doctor` run before anything that needs the commands' imports (torch): both
    must work, and say what is wrong, where torch cannot be imported. None: any other command line, for main."""
    rest = [a for a in argv if a != "--debug"]
    if rest == ["--version"]:
        print(_version_line())
        return 0
    if rest[:1] == ["doctor"]:
        return cmd_doctor(build_parser().parse_args(rest))
    return None


def _log_dir(args: argparse.Namespace) -> Path:
    """Where a crash's traceback goes: the run directory when the command has one that exists, else the temp dir."""
    for attr in ("run_dir", "out"):
        d = getattr(args, attr, None)
        if d is not None and Path(d).is_dir():
            return Path(d)
    return Path(tempfile.gettempdir())


def _write_traceback(args: argparse.Namespace) -> Path:
    path = _log_dir(args) / f"harness-error-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.log"
    try:
        path.write_text(f"harness {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}", encoding="utf-8")
    except OSError:
        return Path("<not written>")
    return path


def _command(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """What runs the parsed command: harness.cli_commands' entry for it (a `weights` subcommand as "weights list")."""
    if args.command == "doctor":
        return cmd_doctor
    return COMMANDS[f"weights {args.weights_command}" if args.command == "weights" else args.command]


def main(argv: list[str] | None = None) -> int:
    early = _main_without_torch(list(sys.argv[1:] if argv is None else argv))
    if early is not None:
        return early
    if _IMPORT_ERROR is not None:
        raise _IMPORT_ERROR
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        return _command(args)(args)
    except USER_ERRORS as exc:
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
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"harness {args.command}: unexpected {type(exc).__name__}{at}: {first}"
            f" (a harness bug; traceback written to {log}; rerun with --debug to see it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
