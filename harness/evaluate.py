"""Evaluate exported models with onnxruntime: accuracy metrics with intervals and baselines, per-image predictions,
latency / throughput per provider. Writes <variant>/metrics.json (atomically, as the variant's last file)."""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from harness import artifacts, runtime
from harness.artifacts import sha256_file
from harness.data import Dataset
from harness.metrics import accuracy_summary
from harness.provenance import dataset_fingerprint
from harness.rundir import read_variant_config, variant_dirs
from harness.stats import softmax
from harness.testsets import as_arrays, load_test_sets

DEFAULT_REPEATS = 10
DEFAULT_WARMUP = 2
LATENCY_BATCHES = (1, 8)
LATENCY_BUDGET_S = 30.0  # per provider and batch size: timing stops after this long (at least 3 runs)
EVAL_BATCH = 8


class EvaluateError(ValueError):
    """The variant cannot be evaluated as it stands; the message names the file and the step to rerun."""


def split_metrics(
    ds, logits: np.ndarray | None, classes: Sequence[str], probabilities: np.ndarray | None = None
) -> dict[str, Any]:
    """accuracy_summary + baselines beside each accuracy + per-image predictions with all class probabilities.

    Give the logits, or (a model whose output is already probabilities, via harness check) the probabilities. An image
    whose row is NaN or infinite is an EvaluateError naming it."""
    classes = list(classes)
    if probabilities is None and logits is None:
        raise ValueError("split_metrics needs the logits or the probabilities")
    raw = np.asarray(logits if probabilities is None else probabilities)  # a -inf logit softmaxes to a finite 0
    bad = [s.name for s, row in zip(ds.samples, raw) if not np.isfinite(row).all()]
    if bad:  # an argmax over NaN is column 0: never a prediction, never counted
        raise EvaluateError(
            f"{ds.name}: the model's output is NaN or infinite for {len(bad)} of {len(raw)} images: "
            f"{', '.join(bad[:5])}{f' (+{len(bad) - 5} more)' if len(bad) > 5 else ''}; these images cannot be "
            f"scored; check the model (and its export) on them"
        )
    probs = np.asarray(probabilities, dtype=np.float64) if probabilities is not None else softmax(raw)
    preds = [classes[i] for i in probs.argmax(1)]
    acceptable = [sorted(s.acceptable) for s in ds.samples]
    primary = [s.label for s in ds.samples]
    summary = accuracy_summary(preds, acceptable, primary, classes)
    base = summary["baselines"]
    for kind in ("soft", "strict"):  # the chance references right next to the number they qualify
        summary[kind]["baselines"] = {"uniform": base[f"uniform_{kind}"], "constant": base[f"constant_{kind}"]}
    summary["predictions"] = [
        {
            "image": s.name,
            "primary": s.label,
            "acceptable": acc,
            "predicted": p,
            "soft_correct": p in acc,
            "strict_correct": p == s.label,
            "probabilities": {c: float(v) for c, v in zip(classes, row)},
        }
        for s, acc, p, row in zip(ds.samples, acceptable, preds, probs)
    ]
    return summary


def _check_export(vdir: Path) -> dict[str, Any]:
    onnx_path, rec_path = vdir / "model.onnx", vdir / "export.json"
    if not onnx_path.is_file():
        raise EvaluateError(f"{onnx_path} is missing; run `harness export {vdir.parent}` first")
    if not rec_path.is_file():
        raise EvaluateError(
            f"{rec_path} is missing, so {onnx_path} has no recorded parity; run `harness export --force {vdir.parent}`"
        )
    rec = artifacts.read_json(rec_path)
    if not rec.get("parity", {}).get("passed"):
        raise EvaluateError(
            f"{rec_path}: the last export of this variant failed parity; fix it and rerun "
            f"`harness export --force {vdir.parent}`"
        )
    return rec


def evaluate_variant(
    vdir: Path,
    providers: str | None = None,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    batch_sizes: Sequence[int] = LATENCY_BATCHES,
    log=None,
    data_root: Path | None = None,
    tests: Mapping[str, Dataset] | None = None,
) -> dict[str, Any]:
    """Evaluate vdir/model.onnx on the profile's test sets and write vdir/metrics.json; returns its content.

    `providers` is a request: None/'auto', 'cpu', 'cuda' or 'tensorrt' (see harness.runtime). Predictions come from
    the first provider of that selection; latency is measured for it and, when that is a GPU provider, for the CPU
    too. Everything is read and checked before anything is written; metrics.json is the only file written. `tests`:
    the profile's test sets already decoded by the caller (harness.testsets.load_test_sets), by split; those not
    among them (or every one, without `tests`) are loaded here.
    """
    vdir = Path(vdir)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    onnx_path = vdir / "model.onnx"
    t0 = time.perf_counter()
    config, profile = read_variant_config(vdir, data_root)
    record = _check_export(vdir)
    classes, size = list(config["classes"]), profile.image_size
    request = providers or "auto"
    selected = runtime.select_providers(request)

    session = runtime.create_session(onnx_path, selected)  # corrupt / truncated file -> ModelLoadError naming it
    runtime.check_io(session, onnx_path, size, len(classes))
    sha = sha256_file(onnx_path)
    if sha != record.get("sha256"):
        raise EvaluateError(
            f"{onnx_path}: sha256 {sha[:12]}... differs from the file that passed parity "
            f"({vdir / 'export.json'}: {str(record.get('sha256'))[:12]}...); it was replaced or "
            f"damaged; rerun `harness export --force {vdir.parent}`"
        )
    inputs = as_arrays(load_test_sets(config["data_root"], profile.test_sets, classes, size, tests), size)
    made_from = {"onnx_sha256": sha, "test_data": {split: dataset_fingerprint(ds) for split, (ds, _) in inputs.items()}}

    test_sets = {}
    for split, (ds, x) in inputs.items():
        logits = runtime.run_batches(session, x, EVAL_BATCH)
        test_sets[split] = split_metrics(ds, logits, classes)
        s = test_sets[split]
        log(
            f"[{vdir.name}] {split}: soft {s['soft']['value']:.3f} {_ci(s['soft'])} strict {s['strict']['value']:.3f} "
            f"{_ci(s['strict'])} (n={s['n']}, uniform {s['baselines']['uniform_soft']:.3f}/"
            f"{s['baselines']['uniform_strict']:.3f})"
        )

    latency = {}
    sessions = [session] if selected == [runtime.CPU] else [session, runtime.create_session(onnx_path, [runtime.CPU])]
    for sess in sessions:
        name = sess.get_providers()[0]
        latency[name] = runtime.measure_latency(sess, size, batch_sizes, repeats, warmup, budget_s=LATENCY_BUDGET_S)
        log(
            f"[{vdir.name}] latency {name}: "
            + ", ".join(
                f"batch {b} {v['median_ms']:.1f} ms ({v['throughput_ips']:.1f} img/s)" for b, v in latency[name].items()
            )
        )

    return write_metrics(
        vdir,
        inputs=made_from,
        backbone=config.get("backbone", record.get("backbone")),
        classes=classes,
        image_size=size,
        tta_hflip=bool(record.get("tta_hflip")),
        model={
            "file": onnx_path.name,
            "sha256": sha,
            "exporter": record.get("exporter", {}).get("name"),
            "opset": record.get("opset"),
            "parity_passed": True,
            "parity_max_abs": record["parity"]["cpu"].get("max_abs"),
        },
        requested=request,
        providers=session.get_providers(),
        gpu_usable=runtime.gpu_usable(),
        test_sets=test_sets,
        latency_settings={
            "batch_sizes": list(batch_sizes),
            "repeats": repeats,
            "warmup": warmup,
            "budget_s": LATENCY_BUDGET_S,
        },
        latency_input="uniform random float32",
        latency=latency,
        started=t0,
    )


def write_metrics(
    folder: Path,
    *,
    inputs: Mapping[str, Any],
    backbone: str | None,
    classes: Sequence[str],
    image_size: Any,
    model: Mapping[str, Any],
    requested: str,
    providers: Sequence[str],
    test_sets: Mapping[str, Any],
    latency_settings: Mapping[str, Any],
    latency_input: str,
    latency: Mapping[str, Any],
    kind: str | None = None,
    tta_hflip: bool | None = None,
    gpu_usable: bool | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Write <folder>/metrics.json (atomically) and return it: the record `harness evaluate` and `harness check`
    both write, for the model folder `folder` (its name is the variant). `latency`: {provider: {batch: timing}};
    `latency_settings`: how it was measured (batch sizes first). Given only when not None: `kind` (after the
    variant), `tta_hflip` (after the image size), `gpu_usable` (in runtime), the `seconds` since `started`
    (time.perf_counter(), last)."""
    metrics: dict[str, Any] = {"schema": 1, "variant": folder.name}
    if kind is not None:
        metrics["kind"] = kind
    metrics |= {"inputs": inputs, "backbone": backbone, "classes": list(classes), "image_size": image_size}
    if tta_hflip is not None:
        metrics["tta_hflip"] = tta_hflip
    host: dict[str, Any] = {"requested": requested, "providers": providers}
    if gpu_usable is not None:
        host["gpu_usable"] = gpu_usable
    host |= {"onnxruntime": onnxruntime.__version__, "cpu_count": os.cpu_count()}
    metrics |= {
        "model": model,
        "runtime": host,
        "test_sets": test_sets,
        "latency": {
            **latency_settings,
            "statistic": "median wall time of session.run per batch",
            "input": latency_input,
            "by_provider": latency,
        },
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if started is not None:
        metrics["seconds"] = time.perf_counter() - started
    artifacts.write_json(folder / "metrics.json", metrics)
    return metrics


def _ci(acc: dict[str, Any]) -> str:
    lo, hi = acc["wilson"]
    return f"[{lo:.2f}, {hi:.2f}]"


def evaluate_run(
    run_dir: Path,
    providers: str | None = None,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    log=None,
    data_root: Path | None = None,
) -> list[dict[str, Any]]:
    """evaluate_variant for every trained variant of the run (each must have been exported)."""
    return [
        evaluate_variant(v, providers, repeats, warmup, log=log, data_root=data_root) for v in variant_dirs(run_dir)
    ]
