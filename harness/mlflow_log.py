"""A harness run in MLflow (the optional extra `harness[mlflow]`; `harness run/check --mlflow`).

One MLflow run per harness run, with a nested run per model: the profile as params; every accuracy, localization
and calibration figure per test set and seed as metrics; the verdict and each gated criterion's status as tags;
report.html / report.json / summary.md / model.onnx / model-card.md as artifacts. The MLflow run ids are recorded in
<run>/mlflow.json, so logging a resumed (or re-reported) run again updates the same MLflow runs.

Where: $MLFLOW_TRACKING_URI when set (a server, a database), else a local SQLite store in the reports folder
(reports/mlflow/mlflow.db, artifacts beside it in reports/mlflow/artifacts/): no server, nothing outside the reports
folder. The experiment is $MLFLOW_EXPERIMENT_NAME, else "harness".

MLflow is imported inside the functions only: the rest of harness never needs it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import artifacts
from harness.report.build import read_protocol
from harness.report.evidence import confidence
from harness.report.markdown import SUMMARY
from harness.report.model_card import CARDS
from harness.rundir import REPORTS
from harness.stats import ece

RECORD = "mlflow.json"  # <run>/mlflow.json: tracking URI, experiment, the run id and each model's nested run id
PREFIX = "mlflow:"  # harness compare mlflow:<run id> NEW
EXPERIMENT = "harness"
INSTALL = "pip install 'smallset-harness[mlflow]'"
_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")  # MLflow keys: alphanumerics, _ - . space / :


class MlflowError(ValueError):
    """MLflow is not installed, or the store refused something; the message says which and what to do."""


@dataclass(frozen=True)
class Logged:
    tracking_uri: str
    experiment_id: str
    run_id: str
    models: dict[str, str]  # model -> nested run id
    reused: bool  # True: an earlier MLflow run of this run directory was updated


def tracking_uri(reports: Path = REPORTS) -> str:
    """$MLFLOW_TRACKING_URI, else the SQLite store reports/mlflow/mlflow.db (absolute, so any folder finds it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(reports) / 'mlflow' / 'mlflow.db').resolve()}"


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def client(uri: str) -> Any:
    """An MlflowClient of `uri` (its SQLite file's folder made first)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MlflowError(f"--mlflow needs MLflow, which is not installed ({exc}): {INSTALL}") from None
    db = _sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as exc:  # noqa: BLE001 - whatever the store raises (a missing driver, a bad URI)
        raise MlflowError(f"MLflow tracking URI {uri}: {exc} (a local store needs {INSTALL})") from None


def experiment_id(c: Any, uri: str) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    found = c.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    db = _sqlite_file(uri)
    # a local SQLite store keeps its artifacts beside it (MLflow's default would be ./mlruns of the current folder)
    location = (db.parent / "artifacts").as_uri() if db is not None else None
    return str(c.create_experiment(name, artifact_location=location))


def key(*parts: Any) -> str:
    return "/".join(_BAD.sub("_", str(p)) for p in parts if p not in (None, ""))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            yield from _flatten(v, name + ".")
        else:
            yield _BAD.sub("_", name), str(v)[:6000]


def params(report: Mapping[str, Any]) -> dict[str, str]:
    """The profile (flattened: phases.scratch, augment.zoom_out...), the variants and seeds of the run."""
    proto = report.get("protocol") or {}
    out = dict(_flatten({k: v for k, v in (proto.get("profile") or {}).items() if k != "thresholds"}, "profile."))
    out["variants"] = ",".join(str(v) for v in proto.get("variants") or [])
    out["seeds"] = ",".join(str(s) for s in proto.get("seeds") or [])
    return out


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def model_metrics(report: Mapping[str, Any], model: str) -> dict[str, float]:
    """Every figure of one model: per test set and seed (soft / strict accuracy and their Wilson bounds, calibration
    error, each saliency method's localization against its chance level), latency and parity per seed, the means
    over seeds and the baselines."""
    out: dict[str, float] = {}

    def put(name: str, v: Any) -> None:
        if _num(v):
            out[name] = float(v)

    for entry in (report.get("variants") or {}).values():
        if not isinstance(entry, Mapping) or entry.get("model") != model:
            continue
        seed = f"s{entry.get('seed')}"
        for split, ts in (entry.get("test_sets") or {}).items():
            for kind in ("soft", "strict"):
                m = ts.get(kind) or {}
                put(key(split, kind, seed), m.get("value"))
                w = m.get("wilson") or [None, None]
                put(key(split, f"{kind}_wilson_low", seed), w[0])
                put(key(split, f"{kind}_wilson_high", seed), w[1])
            preds = [p for p in ts.get("predictions") or [] if isinstance(p, Mapping)]
            if preds:
                put(
                    key(split, "ece", seed),
                    ece([confidence(p) for p in preds], [bool(p.get("soft_correct")) for p in preds])["ece"],
                )
        for method, sal in [("cam", entry.get("cam"))] + list((entry.get("saliency") or {}).items()):
            for split, s in ((sal or {}).get("summary") or {}).items():
                for name in (
                    "energy_share_mean",
                    "energy_chance_mean",
                    "pointing_hit_rate",
                    "pointing_chance_mean",
                    "iou_mean",
                ):
                    put(key(split, method, name, seed), (s or {}).get(name))
            put(key(method, "sanity_spearman", seed), ((sal or {}).get("sanity") or {}).get("spearman_mean"))
        for batch, rec in (
            ((entry.get("latency") or {}).get("by_provider") or {}).get("CPUExecutionProvider") or {}
        ).items():
            put(key("latency_ms", f"batch{batch}", seed), (rec or {}).get("median_ms"))
        put(key("onnx_parity_max_abs", seed), (entry.get("export") or {}).get("max_abs"))
    for split, per in ((report.get("matrix") or {}).get(model) or {}).items():
        for kind in ("soft", "strict"):
            put(key(split, kind, "mean"), (per.get(kind) or {}).get("mean"))
        b = (report.get("baselines") or {}).get(split) or {}
        for kind in ("soft", "strict"):
            put(key(split, "baseline", f"constant_{kind}"), (b.get(f"constant_{kind}") or {}).get("value"))
            put(key(split, "baseline", f"uniform_{kind}"), b.get(f"uniform_{kind}"))
        put(
            key(split, "ece", "pooled"),
            ((((report.get("evidence") or {}).get("calibration") or {}).get(model) or {}).get(split) or {}).get("ece"),
        )
    return out


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    return (items[i : i + n] for i in range(0, len(items), n))


def _log(c: Any, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, Any], par: Mapping[str, str]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    existing = c.get_run(run_id).data.params
    new_params = [Param(k, v) for k, v in par.items() if k not in existing]
    ms = [Metric(k, v, now, 0) for k, v in metrics.items()]
    ts = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
    for chunk in _chunks(ms, 1000):
        c.log_batch(run_id, metrics=chunk)
    for chunk in _chunks(new_params, 100):
        c.log_batch(run_id, params=chunk)
    for chunk in _chunks(ts, 1000):
        c.log_batch(run_id, tags=chunk)


def _reusable(c: Any, record: Mapping[str, Any], uri: str, par: Mapping[str, str]) -> bool:
    """The recorded MLflow run can be updated: same store, still there (not deleted), no param changed."""
    if record.get("tracking_uri") != uri or not record.get("run_id"):
        return False
    try:
        run = c.get_run(record["run_id"])
    except Exception:  # noqa: BLE001 - MlflowException: deleted, or another store's id
        return False
    if run.info.lifecycle_stage != "active":
        return False
    return all(run.data.params.get(k, v) == v for k, v in par.items())


def _artifacts(c: Any, run_id: str, files: Iterable[tuple[Path, str | None]]) -> None:
    for path, where in files:
        if path.is_file():
            c.log_artifact(run_id, str(path), where)


def log_run(run_dir: Path, uri: str | None = None) -> Logged:
    """Log run_dir's report.json (and its files) to MLflow; update the runs recorded in <run>/mlflow.json when they
    can be (same store, not deleted, same profile), else create them and record them there."""
    run_dir = Path(run_dir)
    report = artifacts.read_json(run_dir / "report.json")
    read_protocol(run_dir)  # a clear error naming the file where this is no run directory
    uri = uri or tracking_uri()
    c = client(uri)
    try:
        return _log_run(c, uri, run_dir, report)
    except MlflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - MlflowException and what its store raises
        raise MlflowError(f"MLflow ({uri}) refused the run {run_dir}: {exc}") from None


def _log_run(c: Any, uri: str, run_dir: Path, report: Mapping[str, Any]) -> Logged:
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    par = params(report)
    record_path = run_dir / RECORD
    record = artifacts.read_json(record_path) if record_path.is_file() else {}
    reused = isinstance(record, dict) and _reusable(c, record, uri, par)
    if not reused:
        record = {}
    exp = str(record.get("experiment_id") or experiment_id(c, uri))
    name = Path(str(report.get("run_dir") or run_dir)).name
    run_id = record.get("run_id") or c.create_run(exp, run_name=name).info.run_id
    c.update_run(run_id, status="RUNNING")
    verdicts = [v for v in report.get("verdicts") or [] if isinstance(v, Mapping)]
    gated = [v for v in verdicts if v.get("gated")]
    tags = {
        "harness.verdict": report.get("verdict"),
        "harness.run_dir": str(report.get("run_dir")),
        "harness.profile": ((report.get("protocol") or {}).get("profile") or {}).get("name"),
        "harness.version": ((report.get("protocol") or {}).get("versions") or {}).get("harness"),
    } | {key("gate", v.get("criterion"), v.get("id")): str(v.get("status")) for v in gated}
    counts = {
        key("gated", s.lower()): float(sum(1 for v in gated if v.get("status") == s))
        for s in ("PASS", "FAIL", "ERROR", "SKIP")
    }
    _log(c, run_id, counts, tags, par)
    _artifacts(c, run_id, [(run_dir / f, None) for f in ("report.html", "report.json", SUMMARY)])
    models: dict[str, str] = dict(record.get("models") or {})
    for model, ident in (report.get("models") or {}).items():
        mine = [v for v in verdicts if v.get("model") == model]
        status = (
            "ERROR"
            if any(v.get("status") == "ERROR" for v in mine)
            else "FAIL"
            if any(v.get("status") == "FAIL" for v in mine)
            else "PASS"
        )
        mtags = {
            MLFLOW_PARENT_RUN_ID: run_id,
            MLFLOW_RUN_NAME: model,
            "harness.model": model,
            "harness.gated": str(bool(ident.get("gated"))),
            "harness.status": status,
        } | {key("gate", v.get("criterion"), v.get("subject") or "model"): str(v.get("status")) for v in mine}
        mid = models.get(model) or c.create_run(exp, tags={MLFLOW_PARENT_RUN_ID: run_id}, run_name=model).info.run_id
        models[model] = mid
        _log(c, mid, model_metrics(report, model), mtags, {"model": model, "variant": str(ident.get("variant"))})
        files: list[tuple[Path, str | None]] = [(run_dir / CARDS / model / "model-card.md", None)]
        for folder, entry in sorted((report.get("variants") or {}).items()):
            if isinstance(entry, Mapping) and entry.get("model") == model:
                files.append((run_dir / folder / "model.onnx", f"s{entry.get('seed')}"))
        _artifacts(c, mid, files)
        c.set_terminated(mid)
    c.set_terminated(run_id, status="FINISHED" if report.get("verdict") in ("PASS", "UNGATED") else "FAILED")
    artifacts.write_json(record_path, {"tracking_uri": uri, "experiment_id": exp, "run_id": run_id, "models": models})
    return Logged(uri, exp, run_id, models, reused)


def is_reference(side: Path | str) -> bool:
    return str(side).startswith(PREFIX)


def fetch_report(side: Path | str, into: Path, uri: str | None = None) -> Path:
    """`mlflow:<run id>` -> a folder <into>/mlflow-<run id>/ holding that MLflow run's report.json (for harness
    compare); any other side is returned as it is."""
    if not is_reference(side):
        return Path(side)
    run_id = str(side)[len(PREFIX) :].strip()
    uri = uri or tracking_uri()
    c = client(uri)
    dest = Path(into) / f"mlflow-{run_id}"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        c.get_run(run_id)
        c.download_artifacts(run_id, "report.json", str(dest))
    except Exception as exc:  # noqa: BLE001 - MlflowException (no such run), or the run has no report.json
        raise MlflowError(
            f"{side}: no report.json of that MLflow run in {uri} ({str(exc).splitlines()[0] if str(exc) else exc}); "
            f"give the id of a harness run logged with --mlflow (not a model's nested run), and the same "
            f"MLFLOW_TRACKING_URI"
        ) from None
    return dest
