"""The run directory: its layout, `latest`, resume, jobs.json, model identity, and whether a step's output is current.

Every step records the `inputs` it was made from in its own JSON record; `step_state` / `is_current` are the one
place that compares a record with the inputs a rerun would use, and that refuses a record or output edited since
harness wrote it (harness.verify: neither report.json's manifest nor the ledger of harness's writes has its sha256).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness import artifacts, provenance, verify
from harness.config import Profile, profile_from_dict, with_test_sets
from harness.saliency.registry import GRADCAM
from harness.saliency.settings import black_box_computed
from harness.variants import gated_by, split_variant

CURRENT, ABSENT, STALE = "current", "absent", "stale"
REPORTS = Path("reports")
JOBS_FILE = "jobs.json"
# run.json's fields that make two runs "the same command" (profile content with its overrides, dataset location and
# content, backbone (in the profile), variants, seeds, weights, thresholds); the machine, versions and argv are not
IDENTITY_KEYS = ("profile", "variants", "seeds", "data_root", "weights_file", "data", "thresholds")
# what every (variant, seed) folder holds once all its steps ran, besides <method>.json per black-box saliency method
STEP_OUTPUTS = ("history.json", "model.pt", "model.onnx", "export.json", "metrics.json", "cam.json")


@dataclass(frozen=True)
class ModelId:
    """Identity of a trained model: (backbone, init, level, seed). The one place its names are built; nothing parses
    them back (records carry the fields)."""

    backbone: str
    init: str
    level: str
    seed: int

    @classmethod
    def of(cls, backbone: str, variant: str, seed: int) -> ModelId:
        init, level = split_variant(variant)
        return cls(backbone, init, level, int(seed))

    @property
    def variant(self) -> str:
        """'<init>-<level>', as named on the command line and in profiles."""
        return f"{self.init}-{self.level}"

    @property
    def key(self) -> str:
        """'<backbone>-<init>-<level>': the model over its seeds, as a report groups it."""
        return f"{self.backbone}-{self.variant}" if self.backbone else self.variant

    @property
    def folder(self) -> str:
        """'<backbone>-<init>-<level>-s<seed>': its folder in the run directory."""
        return f"{self.key}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "init": self.init, "level": self.level, "seed": self.seed}


def step_state(
    record: Path,
    inputs: Mapping[str, Any],
    outputs: Sequence[Path] = (),
    keys: Sequence[str] | None = None,
    *,
    what: str = "inputs",
) -> tuple[str, str]:
    """(CURRENT | ABSENT | STALE, why) of a step whose JSON `record` stores the `inputs` it was made from.

    ABSENT: one of `outputs` does not exist, or (a step with no other outputs) the record. STALE: the record or an
    output of the run's manifest files was edited since harness wrote it (verify.stale_reason), the record is
    missing beside its outputs, cannot be read, is not a JSON object, records no inputs (`what` names them in the
    message), or its inputs differ from `inputs` (only the `keys` of them when given; a key whose wanted value is None
    is never current). `why` names the difference."""
    record = Path(record)
    if any(not Path(p).is_file() for p in outputs) or (not outputs and not record.is_file()):
        return ABSENT, ""
    for path in (record, *outputs):
        edited = verify.stale_reason(Path(path))
        if edited:
            return STALE, edited
    try:
        rec = artifacts.read_json(record)
    except (FileNotFoundError, ValueError) as exc:
        return STALE, str(exc)
    if not isinstance(rec, dict):
        return STALE, f"{record} is not a JSON object"
    recorded = rec.get("inputs")
    if not isinstance(recorded, dict):
        return STALE, f"{record} records no {what} (made by an older harness)"
    wanted = dict(inputs)
    if keys is not None:
        missing = [k for k in keys if wanted.get(k) is None]
        if missing:
            return STALE, f"nothing to compare for {', '.join(missing)}"
        recorded = {k: recorded.get(k) for k in keys}
        wanted = {k: wanted.get(k) for k in keys}
    changes = provenance.diff(recorded, wanted)
    return (STALE, provenance.describe(changes)) if changes else (CURRENT, "")


def is_current(
    record: Path, inputs: Mapping[str, Any], outputs: Sequence[Path] = (), keys: Sequence[str] | None = None
) -> bool:
    """True when `step_state` says CURRENT."""
    return step_state(record, inputs, outputs, keys)[0] == CURRENT


def training_state(vdir: Path, inputs: Mapping[str, Any]) -> tuple[str, str]:
    """step_state of a model folder's training against the inputs a rerun would train from: config.json records
    them; training is complete when history.json (written last, with the checkpoint's sha256) and model.pt exist."""
    vdir = Path(vdir)
    return step_state(vdir / "config.json", inputs, (vdir / "model.pt", vdir / "history.json"), what="training inputs")


# --- the run directory: where runs go, `latest`, resume ---------------------------------------------------------------


def default_run_dir(profile: Profile, reports: Path = REPORTS, under: str = "runs") -> Path:
    """<reports>/<under>/<time>-<profile>-<backbone>, with -2, -3... appended when that folder exists already (two
    runs started within the same second must not share a folder). Only <reports>/runs/ folders move `latest`."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(reports) / under / f"{stamp}-{profile.name}-{profile.backbone}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


def point_latest(run_dir: Path, reports: Path = REPORTS) -> Path | None:
    """<reports>/latest -> runs/<id>, replaced atomically; only for run dirs laid out as <reports>/runs/<id> under
    the project's own reports folder (never in the grandparent of any folder that happens to be called runs)."""
    run_dir = Path(run_dir)
    if run_dir.resolve().parent != (Path(reports) / "runs").resolve():
        return None
    latest = Path(reports) / "latest"
    tmp = latest.with_name(f".latest.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path("runs") / run_dir.name)
    os.replace(tmp, latest)
    return latest


def latest_run(reports: Path = REPORTS) -> Path | None:
    """The run `<reports>/latest` points at, else the folder of <reports>/runs/ whose run.json is newest; None when
    there is none. Returned as <reports>/runs/<id>."""
    runs = Path(reports) / "runs"
    latest = Path(reports) / "latest"
    if latest.is_symlink() or latest.exists():
        target = latest.resolve()
        if runs.is_dir() and target.parent == runs.resolve() and (target / "run.json").is_file():
            return runs / target.name
    candidates = [p for p in runs.glob("*/run.json") if p.is_file()] if runs.is_dir() else []
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.parent.name)).parent


def shown(path: Path) -> str:
    """A path as a person would type it: relative to the current folder when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run_identity(proto: dict) -> dict:
    """The IDENTITY_KEYS of a protocol (run.json) in JSON form, without the profile's and thresholds' `source`
    (where they were read from, not what they say)."""
    ident = {k: proto.get(k) for k in IDENTITY_KEYS}
    for k in ("profile", "thresholds"):
        table = ident[k]
        if isinstance(table, dict):
            ident[k] = {f: v for f, v in table.items() if f != "source"}
    return json.loads(json.dumps(ident, default=artifacts._json_default))  # tuples -> lists, as read back


def complete_jobs(
    run_dir: Path,
    backbone: str,
    jobs: Sequence[tuple[str, int]],
    black_box: Sequence[str] | Callable[[str], Sequence[str]] = (),
) -> set[tuple[str, int]]:
    """The (variant, seed) jobs whose folder holds every STEP_OUTPUTS file and <method>.json for each black-box
    saliency method it gets (`black_box`: the methods, or variant -> its methods; present, whether each is current
    is for its step to check)."""

    def outputs(variant: str) -> tuple[str, ...]:
        methods = black_box(variant) if callable(black_box) else black_box
        return STEP_OUTPUTS + tuple(f"{m}.json" for m in methods)

    return {
        (v, s)
        for v, s in jobs
        if all((Path(run_dir) / ModelId.of(backbone, v, s).folder / f).is_file() for f in outputs(v))
    }


def protocol_black_box(proto: Mapping[str, Any]) -> Callable[[str], tuple[str, ...]]:
    """variant -> the black-box saliency methods its job computes, as a protocol (run.json) recorded them: the
    profile's saliency.methods but Grad-CAM, for every variant or (saliency.black_box_scope = "gated") for the
    variants its thresholds.gated names only."""
    prof = proto.get("profile")
    prof = prof if isinstance(prof, Mapping) else {}
    saliency = prof.get("saliency")
    saliency = saliency if isinstance(saliency, Mapping) else {}
    methods = tuple(str(m) for m in saliency.get("methods") or () if m != GRADCAM)
    thresholds = proto.get("thresholds")
    gated = (thresholds.get("gated") if isinstance(thresholds, Mapping) else None) or ()
    backbone = str(prof.get("backbone"))
    entries = [str(g) for g in gated]
    return lambda variant: methods if black_box_computed(saliency, gated_by(entries, backbone, variant)) else ()


def matrix_progress(run_dir: Path, proto: dict) -> tuple[int, int]:
    """(done, total) (variant, seed) jobs of the matrix a protocol (run.json) describes; done as complete_jobs."""
    prof = proto.get("profile")
    if not isinstance(prof, dict):
        prof = {}
    jobs = [(v, s) for s in proto.get("seeds") or () for v in proto.get("variants") or ()]
    done = complete_jobs(run_dir, str(prof.get("backbone")), jobs, protocol_black_box(proto))
    return len(done), len(jobs)


def find_resumable(reports: Path, protocol_like: dict) -> Path | None:
    """The latest run (latest_run) when it was made by the same command as `protocol_like` (the protocol this run
    would record: run_identity equal) and is incomplete (a (variant, seed) lacks a step's output, or no report.json);
    None otherwise: no run, another command, a complete run, or an unreadable run.json. Reads, never writes."""
    run_dir = latest_run(reports)
    if run_dir is None:
        return None
    try:
        recorded = artifacts.read_json(run_dir / "run.json")
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(recorded, dict) or run_identity(recorded) != run_identity(protocol_like):
        return None
    done, total = matrix_progress(run_dir, protocol_like)
    return None if done == total and (run_dir / "report.json").is_file() else run_dir


# --- the model folders of a run ---------------------------------------------------------------------------------------


def variant_dirs(run_dir: Path) -> list[Path]:
    """The trained variants of a run: its sub-folders holding model.pt, sorted by name."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    found = sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "model.pt").is_file())
    if not found:
        raise FileNotFoundError(f"{run_dir}: no trained variants (no <variant>/model.pt); run `harness train` first")
    return found


def read_variant_config(vdir: Path, data_root: Path | None = None) -> tuple[dict[str, Any], Profile]:
    """(config.json as a dict, the recorded Profile); `data_root` replaces the recorded one (a dataset that moved)."""
    config = artifacts.read_json(Path(vdir) / "config.json")
    if not isinstance(config, dict):
        raise ValueError(f"{Path(vdir) / 'config.json'}: not a JSON object; retrain this variant")
    for key in ("data_root", "classes", "profile"):
        if key not in config:
            raise ValueError(f"{Path(vdir) / 'config.json'}: missing key {key!r}; retrain this variant")
    if data_root is not None:
        config = config | {"data_root": str(Path(data_root).resolve())}
    elif not Path(config["data_root"]).is_dir():
        raise FileNotFoundError(
            f"{Path(vdir) / 'config.json'}: the dataset it was trained on, {config['data_root']}, "
            f"is not there any more; pass --data DIR where it is now"
        )
    # a profile that named no test sets (harness train from such a profile) gets the dataset's, as harness run does
    return config, with_test_sets(profile_from_dict(config["profile"]), Path(config["data_root"]))


# --- jobs.json --------------------------------------------------------------------------------------------------------


class JobOutcome(Protocol):
    """What JobsLog records of a finished job (harness.executors.JobResult)."""

    @property
    def id(self) -> str: ...

    def to_dict(self) -> dict: ...


class JobsLog:
    """<run_dir>/jobs.json: each job's last outcome (status, seconds, host, error and traceback), rewritten
    atomically by the driver after every finished job, so a crash keeps what finished. Entries of jobs this run
    did not touch (another --variants subset) are kept."""

    def __init__(self, run_dir: Path, executor: dict) -> None:
        self.path = Path(run_dir) / JOBS_FILE
        try:
            old = artifacts.read_json(self.path)
        except (FileNotFoundError, ValueError):
            old = {}
        self.jobs = dict(old.get("jobs") or {}) if isinstance(old, dict) else {}
        self.executor = executor

    def add(self, result: JobOutcome) -> None:
        self.jobs[result.id] = result.to_dict() | {"finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
        artifacts.write_json(self.path, {"executor": self.executor, "jobs": self.jobs})
