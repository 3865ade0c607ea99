"""The robustness criteria's readers: each takes one seed run (harness.verdicts.collect.SeedRun: its folder, kind,
parsed metrics) and returns (value or None, evidence file, note), recomputed from the per-image records of
robustness.json / faithfulness.json (harness.robustness.measures), never from a stored summary.

A file is usable when it parses, is a JSON object and was made from the model on disk (its recorded onnx_sha256
against the model file's, read from the run's checked metrics.json or hashed here); otherwise the note says why and
the verdict is ERROR. Parsed files are cached by (path, size, mtime), so the many verdicts of one file read it once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.artifacts import sha256_file
from harness.robustness.files import FAITHFULNESS_FILE, ROBUSTNESS_FILE
from harness.robustness.measures import corruption_summary, faithfulness_summary, masking_summary
from harness.robustness.rules import RobustnessRule

Reading = tuple[float | None, str, str]


@lru_cache(maxsize=128)
def _parse(path: str, size: int, mtime_ns: int) -> tuple[dict[str, Any] | None, str]:
    name = Path(path).name
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        return None, f"{name}: unreadable ({exc.strerror or exc})"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"{name}: invalid JSON ({exc}); rerun the robustness step (harness run / harness check)"
    if not isinstance(obj, dict):
        return None, f"{name}: invalid evidence (a JSON {type(obj).__name__}, not an object)"
    return obj, ""


@lru_cache(maxsize=64)
def _sha(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def _model_file(folder: Path) -> Path:
    """The ONNX model a folder's evidence is about: its model.onnx, or the file harness check judged."""
    if (folder / "model.onnx").exists():
        return folder / "model.onnx"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return folder / "model.onnx"
    model = config.get("model") if isinstance(config, dict) else None
    return Path(str(model["path"])) if isinstance(model, dict) and model.get("path") else folder / "model.onnx"


def model_sha(run: Any) -> str | None:
    """sha256 of the model on disk: the checked metrics.json's record of it, else the file hashed (None: missing)."""
    recorded = ((getattr(run, "metrics", None) or {}).get("model") or {}).get("sha256")
    if recorded:
        return str(recorded)
    path = _model_file(Path(run.folder))
    if not path.is_file():
        return None
    st = path.stat()
    return _sha(str(path), st.st_size, st.st_mtime_ns)


def load(run: Any, file: str) -> tuple[dict[str, Any] | None, str]:
    """(the evidence file of a seed run, "") or (None, why it cannot be used: missing, unreadable, another model)."""
    path = Path(run.folder) / file
    if not path.is_file():
        return None, f"{file} missing: rerun the run (its robustness step writes it) or harness check"
    st = path.stat()
    ev, why = _parse(str(path), st.st_size, st.st_mtime_ns)
    if ev is None:
        return None, why
    made = (ev.get("inputs") or {}).get("onnx_sha256")
    have = model_sha(run)
    if have is None:
        return None, f"the model file is missing: {file} was computed from a model (sha256 {str(made)[:12]}...)"
    if made != have:
        return None, (
            f"{file} was computed from another model (sha256 {str(made)[:12]}...) than the one on disk "
            f"({have[:12]}...): rerun the run (its robustness step redoes itself)"
        )
    return ev, ""


def _drop(ev: Mapping[str, Any], split: str, corruption: str, rule: RobustnessRule) -> tuple[float | None, str]:
    records = (ev.get("images") or {}).get(split)
    if not isinstance(records, list):
        return None, f"{ROBUSTNESS_FILE} has no test set {split}"
    if corruption not in (ev.get("corruptions") or []):
        return None, f"{ROBUSTNESS_FILE} did not measure {corruption} (robustness.corruptions)"
    measured = [int(s) for s in ev.get("severities") or []]
    if rule.max_severity not in measured:
        return None, (
            f"{ROBUSTNESS_FILE} measured severities {measured}, not {rule.max_severity} (max_severity): run with "
            f"--set robustness.full=true or robustness.severity={rule.max_severity}"
        )
    drops = [corruption_summary(records, corruption, s)["drop"] for s in measured if s <= rule.max_severity]
    return max(drops), ""


def read_robustness(run: Any, arg: tuple[str, str, RobustnessRule]) -> Reading:
    """(split, corruption, rule): the largest drop of soft accuracy from the same photos clean, over the measured
    severities up to rule.max_severity."""
    split, corruption, rule = arg
    ev, why = load(run, ROBUSTNESS_FILE)
    if ev is None:
        return None, ROBUSTNESS_FILE, why
    try:
        value, why = _drop(ev, split, corruption, rule)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return None, ROBUSTNESS_FILE, f"{ROBUSTNESS_FILE}: malformed records of {split} ({exc}); rerun its step"
    return value, ROBUSTNESS_FILE, why


def masking_of(ev: Mapping[str, Any], split: str) -> tuple[dict[str, Any] | None, str]:
    """(the masking summary of one test set, "") or (None, why: masking off, no such set, or skipped reasons)."""
    masking = ev.get("masking")
    if masking is None:
        return None, f"{ROBUSTNESS_FILE}: object masking was off (robustness.masking = false)"
    entry = (masking or {}).get(split)
    if not isinstance(entry, Mapping):
        return None, f"{ROBUSTNESS_FILE} has no masking of test set {split}"
    if not entry.get("has_regions"):
        return None, "skipped: the test set has no region annotations"
    summary = masking_summary(entry.get("images") or [])
    if not summary.get("n"):
        return None, "skipped: no photo with labelled regions whose clean answer was right"
    return summary, ""


def read_depends_on_object(run: Any, split: str) -> Reading:
    """The lower end of the 95% paired interval of (share of photos losing their answer when the labelled regions are
    hidden) - (share losing it when the same shape is hidden elsewhere, in the majority of the draws)."""
    ev, why = load(run, ROBUSTNESS_FILE)
    if ev is None:
        return None, ROBUSTNESS_FILE, why
    try:
        summary, why = masking_of(ev, split)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return None, ROBUSTNESS_FILE, f"{ROBUSTNESS_FILE}: malformed masking records of {split} ({exc})"
    if summary is None:
        return None, ROBUSTNESS_FILE, why
    return float(summary["difference_interval"][0]), ROBUSTNESS_FILE, ""


def faithfulness_of(ev: Mapping[str, Any], method: str, split: str) -> tuple[dict[str, Any] | None, str]:
    info = (ev.get("methods") or {}).get(method)
    if not isinstance(info, Mapping):
        return None, f"{FAITHFULNESS_FILE} has no curves of {method}"
    if info.get("skipped"):
        return None, f"{FAITHFULNESS_FILE}: {method}: {info['skipped']}"
    records = (ev.get("images") or {}).get(split)
    if not isinstance(records, list):
        return None, f"{FAITHFULNESS_FILE} has no test set {split}"
    summary = faithfulness_summary(records, method)
    if not summary.get("n"):
        return None, f"skipped: no photo of {split} has a stored {method} map of its predicted class"
    return summary, ""


def read_faithfulness(run: Any, arg: tuple[str, str]) -> Reading:
    """(method evidence key, split): mean over the photos of (insertion - deletion AUC) of the method's maps minus
    that of a random map."""
    method, split = arg
    ev, why = load(run, FAITHFULNESS_FILE)
    if ev is None:
        return None, FAITHFULNESS_FILE, why
    try:
        summary, why = faithfulness_of(ev, method, split)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return None, FAITHFULNESS_FILE, f"{FAITHFULNESS_FILE}: malformed curves of {split} ({exc})"
    if summary is None:
        return None, FAITHFULNESS_FILE, why
    return float(summary["margin"]), FAITHFULNESS_FILE, ""
