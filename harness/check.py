"""`harness check MODEL.onnx`: gate any ONNX image classifier, trained anywhere, on a labelled dataset.

The model's input/output contract comes from its spec (`harness.spec`: a TOML file and/or --set, defaults from the
ONNX metadata of a `harness export` and the graph's shapes), checked before any work. The run directory has the
shape of `harness run`'s (run.json, one model folder, report.json, report.html), so `harness report DIR` and
`pytest suites --run-dir DIR` work on it unchanged:

    <run>/<name>/config.json     what was checked: the model file (path, sha256), its spec, the dataset
    <run>/<name>/metrics.json    accuracy beside the constant answer and guessing, per-image predictions, latency
    <run>/<name>/<method>.json   black-box saliency (occlusion by default): localization beside a uniform map's
                                 chance level, the sanity check; overlays in <run>/<name>/<method>/<split>/
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import artifacts, provenance, runlock, runtime, verify
from harness.audit.step import audit_step, training_set
from harness.baselines.step import baselines_step, feature_choice, promise
from harness.config import apply_overrides, read_profile_toml
from harness.data import DataError, class_folders, discover_test_sets, ignored_note, load_test, working_short_side
from harness.evaluate import split_metrics, write_metrics
from harness.preprocess import make_forward, predict, to_model
from harness.report.build import build_report, write_reports
from harness.robustness.settings import RobustnessSettings, parse_robustness
from harness.robustness.step import robustness_step
from harness.rundir import is_current, point_latest
from harness.saliency.blackbox_step import evidence_inputs, evidence_step
from harness.saliency.registry import GRADCAM, known_methods
from harness.saliency.settings import SaliencySettings, parse_saliency
from harness.seal import make_seal
from harness.spec import FIELDS, read_spec, resolve_spec
from harness.thresholds import Thresholds, check_applies, check_user_file, fit_to_run, parse_thresholds
from harness.validate import ConfigError, check_keys, read_str, read_str_list, read_table

CHECK_BACKBONE = "onnx"  # the "backbone" of a model judged from its ONNX file: nothing is known about its insides
LATENCY_BATCHES = (1, 8)


@dataclass(frozen=True)
class CheckProfile:
    """A profile for `harness check`: test sets (none: discovered), saliency methods, thresholds. No training."""

    name: str
    test_sets: tuple[str, ...] = ()
    saliency: SaliencySettings = field(default_factory=lambda: SaliencySettings(methods=("occlusion",)))
    robustness: RobustnessSettings = field(default_factory=RobustnessSettings)  # corruptions, masking, faithfulness
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "check",
            "backbone": CHECK_BACKBONE,
            "test_sets": list(self.test_sets),
            "saliency": self.saliency.to_dict(),
            "robustness": self.robustness.to_dict(),
            "thresholds": dict(self.thresholds),
            "source": self.source,
        }


def split_sets(sets: Sequence[str]) -> tuple[list[str], list[str]]:
    """--set KEY=VALUE items -> (spec overrides, profile overrides): spec fields go to the model's spec."""
    spec: list[str] = []
    profile: list[str] = []
    for item in sets:
        key = item.partition("=")[0].strip()
        (spec if key.removeprefix("spec.") in FIELDS else profile).append(item.removeprefix("spec."))
    return spec, profile


def load_check_profile(name_or_path: str = "check", overrides: Sequence[str] = ()) -> CheckProfile:
    raw, source = read_profile_toml(name_or_path)
    raw.pop("source", None)
    if overrides:
        raw = apply_overrides(raw, overrides)
        source += f" + overrides ({len(overrides)} --set)"
    where = source
    if raw.get("kind") != "check":
        raise ConfigError(
            f'{where}: not a profile for harness check (it needs kind = "check"); the built-in one is '
            f"`check`; training profiles (smoke, cpu, full) are for harness run"
        )
    check_keys(
        raw, ["name", "kind", "test_sets", "saliency", "robustness", "thresholds"], "", where, required=("name",)
    )
    thresholds = read_table(raw.get("thresholds", {}), "thresholds", where)
    parse_thresholds(thresholds, where)
    saliency = parse_saliency(raw.get("saliency", {"methods": ["occlusion"]}), where)
    if GRADCAM in saliency.methods:
        raise ConfigError(
            f"{where}: saliency.methods lists 'gradcam', which needs the PyTorch model; harness check "
            f"has only the ONNX file: use black-box methods ({', '.join(sorted(known_methods(black_box=True)))})"
        )
    return CheckProfile(
        name=read_str(raw["name"], "name", where),
        test_sets=read_str_list(raw["test_sets"], "test_sets", where) if "test_sets" in raw else (),
        saliency=saliency,
        robustness=parse_robustness(raw.get("robustness"), where),
        thresholds=thresholds,
        source=source,
    )


def dataset_classes(root: Path) -> tuple[str, ...]:
    """The dataset's classes: its train/<class>/ folder names (sorted, as harness trains), else the class folders
    and COCO categories of its test sets."""
    root = Path(root)
    if (root / "train").is_dir():
        train = tuple(f.name for f in class_folders(root / "train"))
        if len(train) >= 2:
            return train
    names: set[str] = set()
    for split in discover_test_sets(root):
        ann = root / "annotations" / f"{split}.json"
        if ann.is_file():
            coco = artifacts.read_json(ann)
            names |= {str(c.get("name")) for c in (coco.get("categories") or []) if isinstance(c, dict)}
        elif (root / split).is_dir():
            names |= {f.name for f in class_folders(root / split)}
    if len(names) < 2:
        raise DataError(
            f"{root}: cannot tell the dataset's classes: no train/<class>/ folders and fewer than 2 "
            f"classes among the test sets' class folders / COCO categories"
        )
    return tuple(sorted(names))


def model_name(model_path: Path, session=None) -> str:
    """The model folder's name: a harness export's variant (from its metadata), else the file's stem, made safe."""
    name = ""
    if session is not None:
        name = (session.get_modelmeta().custom_metadata_map or {}).get("harness.variant", "")
    name = name or Path(model_path).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def default_check_dir(name: str, reports: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(reports) / "runs" / f"{stamp}-check-{name}"


def check_out_dir(run_dir: Path, data_root: Path, name: str, model_path: Path, model_sha: str) -> None:
    """Refuse, before anything is written, an --out that would lose or mix evidence: the dataset folder or a folder
    inside it, a training run of `harness run` (its run.json and reports would be overwritten), or the check of
    another model (its model folder would be judged under this model's run.json). The same model again resumes."""
    where, inside = Path(run_dir).resolve(), Path(data_root).resolve()
    if where == inside or where.is_relative_to(inside):
        raise ConfigError(
            f"--out {run_dir} is {'the dataset folder' if where == inside else 'inside the dataset folder'} --data "
            f"{data_root}; harness check never writes into a dataset. Choose an --out outside it (or leave --out "
            f"out: reports/runs/<time>-check-{name})"
        )
    proto_path = Path(run_dir) / "run.json"
    other = f"choose another --out (or leave --out out: reports/runs/<time>-check-{name})"
    try:
        proto = artifacts.read_json(proto_path) if proto_path.is_file() else None
    except ValueError as exc:
        raise ConfigError(f"--out {run_dir}: {exc}; it is not a harness check run directory: {other}") from None
    if proto is None:
        folders = sorted(p.parent.name for p in Path(run_dir).glob("*/config.json") if p.parent.name != name)
        if folders:
            raise ConfigError(
                f"--out {run_dir} holds model folders {folders} but no run.json: not a harness check run of "
                f"{model_path}; {other}"
            )
        return
    if not isinstance(proto, dict) or proto.get("kind") != "check":
        raise ConfigError(
            f"--out {run_dir} holds a training run of `harness run` (its run.json); harness check would overwrite "
            f"its run.json and reports and lose its protocol: {other}"
        )
    recorded = proto.get("model")
    earlier: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    if earlier.get("sha256") != model_sha or proto.get("variants") != [name]:
        raise ConfigError(
            f"--out {run_dir} holds the check of another model ({earlier.get('path')}, sha256 "
            f"{str(earlier.get('sha256'))[:12]}...); checking {model_path} there would judge that model's folder "
            f"under this run.json: {other}"
        )


def _latency(session, spec, batch_sizes=LATENCY_BATCHES) -> dict[str, Any]:
    h, w = spec.size

    def make_input(b: int, rng) -> np.ndarray:
        return to_model(spec, rng.random((b, 3, h, w), dtype=np.float32))

    return runtime.measure_latency(session, h, batch_sizes, make_input=make_input, budget_s=30.0)


def check_model(
    model_path: Path,
    data_root: Path,
    spec_file: Path | None = None,
    sets: Sequence[str] = (),
    profile: str = "check",
    thresholds_file: Path | None = None,
    out: Path | None = None,
    reports: Path = Path("reports"),
    log=None,
) -> tuple[dict[str, Any], Path]:
    """Judge one ONNX model on a dataset; returns (report, run directory). Everything that can be known wrong (the
    model file, the spec against the graph and the dataset's classes, the profile, the thresholds, the dataset) is
    checked before anything is written."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    model_path, data_root = Path(model_path), Path(data_root)
    spec_sets, profile_sets = split_sets(sets)
    prof = load_check_profile(profile, profile_sets)
    thresholds: Thresholds = parse_thresholds(prof.thresholds, prof.source, thresholds_file)
    notes: list[str] = []
    test_sets = prof.test_sets
    if not test_sets:
        test_sets = discover_test_sets(data_root)
        check_user_file(thresholds_file, test_sets)  # the user's own rules are never set aside, only the profile's
        thresholds, notes = fit_to_run(thresholds, test_sets)
    classes = dataset_classes(data_root)
    session = runtime.create_session(model_path, [runtime.CPU], foreign=True)
    spec = resolve_spec(model_path, read_spec(spec_file, spec_sets), classes, session=session)
    name = model_name(model_path, session)
    check_applies(thresholds, test_sets, [name], thresholds.source or prof.source, backbones=[CHECK_BACKBONE])
    short = working_short_side(max(spec.size))
    datasets = {split: load_test(data_root, split, classes, max_short_side=short) for split in test_sets}
    for note in filter(None, map(ignored_note, datasets.values())):
        log(f"note: {note}")
    model_sha = artifacts.sha256_file(model_path)
    test_fp = provenance.fingerprints(datasets)
    recorded_prof = prof.to_dict() | {"test_sets": list(test_sets)}

    forward = make_forward(session, spec, classes)
    first = next(((split, ds.samples[0]) for split, ds in datasets.items() if ds.samples), None)
    if first is not None:  # the output's contract (width, probabilities or logits) is checked on a real image
        predict(forward, spec, first[1:], first[0])

    train = training_set(data_root, max(spec.size))  # the audit's reference (its loader's errors come first)
    run_dir = Path(out) if out else default_check_dir(name, reports)
    check_out_dir(run_dir, data_root, name, model_path, model_sha)
    folder = run_dir / name
    with runlock.hold(run_dir), verify.recording(run_dir) as written:  # the ledger of harness's writes
        folder.mkdir(parents=True, exist_ok=True)
        proto = {
            "kind": "check",
            "profile": recorded_prof,
            "variants": [name],
            "seeds": [0],
            "data_root": str(data_root.resolve()),
            "data": {"test": test_fp, "classes": list(classes)},
            "model": {"path": str(model_path.resolve()), "sha256": model_sha, "bytes": model_path.stat().st_size},
            "spec": spec.to_dict(),
            "thresholds": thresholds.to_dict(),
            "thresholds_notes": notes,
            "onnxruntime_providers": session.get_providers(),
            "versions": provenance.versions(),
            "argv": sys.argv,
            "baselines": promise(feature_choice()),  # the ladder on the shipped backbone's features
        }
        artifacts.write_json(run_dir / "run.json", proto | {"seal": make_seal(proto, run_dir / "run.json")})
        point_latest(run_dir, reports)
        for note in notes:
            log(f"note: {note}")
        audit_step(run_dir, train, datasets, data_root, {"test": test_fp}, log=log)  # can the data be trusted?
        baselines_step(run_dir, train, datasets, classes, {"test": test_fp}, log=log)  # the ladder: probe, kNN
        artifacts.write_json(
            folder / "config.json",
            {
                "kind": "check",
                "variant": name,
                "backbone": CHECK_BACKBONE,
                "seed": 0,
                "init": None,
                "level": None,
                "classes": list(classes),
                "model": proto["model"],
                "spec": spec.to_dict(),
                "data_root": str(data_root.resolve()),
                "profile": recorded_prof,
            },
        )

        made_from = {"onnx_sha256": model_sha, "test_data": test_fp, "spec": spec.to_dict()}
        metrics_path = folder / "metrics.json"
        if not is_current(metrics_path, made_from):
            test_results = {}
            probs = {split: predict(forward, spec, ds.samples, split) for split, ds in datasets.items()}  # all finite
            for split, ds in datasets.items():
                test_results[split] = split_metrics(ds, None, classes, probabilities=probs[split])
                s = test_results[split]
                log(
                    f"[{name}] {split}: soft {s['soft']['value']:.3f} strict {s['strict']['value']:.3f} "
                    f"(n={s['n']}; best constant answer {s['baselines']['constant_soft']['value']:.3f} / "
                    f"{s['baselines']['constant_strict']['value']:.3f})"
                )
            latency = _latency(session, spec)
            log(f"[{name}] latency CPU: " + ", ".join(f"batch {b} {v['median_ms']:.1f} ms" for b, v in latency.items()))
            write_metrics(
                folder,
                kind="check",
                inputs=made_from,
                backbone=CHECK_BACKBONE,
                classes=classes,
                image_size=list(spec.size),
                model={"file": str(model_path.resolve()), "sha256": model_sha},
                requested="cpu",
                providers=session.get_providers(),
                test_sets=test_results,
                latency_settings={"batch_sizes": list(LATENCY_BATCHES)},
                latency_input="uniform random images in the model's own input format",
                latency={runtime.CPU: latency},
            )
        else:
            log(f"[{name}] metrics.json is current, skipping")

        settings = prof.saliency
        sanity = settings.sanity_inputs()
        for method in settings.black_box:
            params = dict(settings.params.get(method) or {})
            inputs = evidence_inputs(
                model_sha, datasets, method, params, sanity, spec.to_dict(), maps=settings.maps_inputs()
            )
            path = folder / f"{method}.json"
            if is_current(path, inputs):
                log(f"[{name}] {method}.json is current, skipping")
                continue
            evidence_step(
                folder,
                method,
                params,
                forward,
                spec,
                datasets,
                classes,
                model_path,
                settings,
                inputs,
                CHECK_BACKBONE,
                no_head=lambda exc: log(f"[{name}] sanity check impossible: {exc}"),
            )
        robustness_step(
            folder,
            forward,
            spec,
            datasets,
            classes,
            prof.robustness,
            model_sha,
            CHECK_BACKBONE,
            settings.black_box,
            log=log,
        )
        written.commit()
        verify.refuse_unvouched(run_dir)  # a file edited by hand that no step rewrote is never judged
        report = build_report(run_dir, thresholds)
        report["protocol"]["seconds"] = time.perf_counter() - t0
        write_reports(run_dir, report)
    return report, run_dir
