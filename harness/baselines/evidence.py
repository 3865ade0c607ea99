"""Reading baselines.json back, never trusting its stored summaries: each baseline's accuracy on a test set is
recomputed from its per-image predictions (harness.metrics.accuracy_summary), and paired with a model's per-image
predictions (checked metrics.json, harness.verdicts.recheck) by image name, with the exact McNemar test
(harness.stats.paired). A missing or unreadable baselines.json, or one made from other data than run.json records,
cannot be used; the reason says what to rerun."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness import stats
from harness.baselines.files import BASELINES_FILE
from harness.metrics import accuracy_summary

FIX = "rerun harness run (or harness check) into this run directory: its baseline step writes it"
Rows = list[dict[str, Any]]


@lru_cache(maxsize=32)
def _parse(path: str, size: int, mtime_ns: int) -> tuple[dict[str, Any] | None, str]:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{Path(path).name} missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{Path(path).name}: unreadable ({exc})"
    return (obj, "") if isinstance(obj, dict) else (None, f"{Path(path).name}: not a JSON object")


def _load(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        st = path.stat()
    except OSError:
        return None, f"{path.name} missing"
    return _parse(str(path), st.st_size, st.st_mtime_ns)


def promised(run_dir: Path) -> bool:
    """Whether run.json records that the run computes the ladder (a run made before the step does not)."""
    proto, _ = _load(Path(run_dir) / "run.json")
    return isinstance((proto or {}).get("baselines"), Mapping)


def read_baselines(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """(baselines.json, "") or (None, why it cannot be used: missing, unreadable, made from other data than
    run.json's fingerprints)."""
    run_dir = Path(run_dir)
    ev, why = _load(run_dir / BASELINES_FILE)
    if ev is None:
        return None, f"{why}; {FIX}"
    made = ev.get("inputs") if isinstance(ev.get("inputs"), Mapping) else None
    if made is None:
        return None, f"{BASELINES_FILE} records no inputs; {FIX}"
    proto, _ = _load(run_dir / "run.json")
    raw = (proto or {}).get("data")
    data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    if data.get("train") and made.get("train") != data.get("train"):
        return None, f"{BASELINES_FILE} was made from another training set than run.json's; {FIX}"
    tests = made.get("test") if isinstance(made.get("test"), Mapping) else {}
    now: Mapping[str, Any] = data["test"] if isinstance(data.get("test"), Mapping) else {}
    for split, fp in now.items():
        if split in tests and tests[split] != fp:
            return None, f"{BASELINES_FILE} was made from another {split} than run.json's; {FIX}"
    return ev, ""


def _rows(preds: Any, where: str) -> tuple[Rows | None, str]:
    """The per-image rows (image, primary, acceptable, predicted), checked; (None, why) when malformed."""
    if not isinstance(preds, list) or not preds:
        return None, f"{where}: no per-image predictions; {FIX}"
    rows = []
    for i, p in enumerate(preds):
        acc = p.get("acceptable") if isinstance(p, dict) else None
        if (
            not isinstance(p, dict)
            or not all(isinstance(p.get(k), str) for k in ("image", "primary", "predicted"))
            or not isinstance(acc, list)
            or not all(isinstance(a, str) for a in acc)
        ):
            return None, f"{where}: prediction {i} is malformed (needs image, primary, acceptable, predicted); {FIX}"
        rows.append({k: p[k] for k in ("image", "primary", "acceptable", "predicted")})
    return rows, ""


def baseline_rows(ev: Mapping[str, Any], split: str, name: str) -> tuple[Rows | None, dict[str, Any] | None, str]:
    """(per-image rows, the summary recomputed from them, "") of baseline `name` ("probe" or "knn") on `split`, or
    (None, None, why): skipped (no training set), no such test set, malformed."""
    if ev.get("skipped"):
        return None, None, str(ev["skipped"])
    entry = ((ev.get("test_sets") or {}).get(split) or {}).get(name)
    if not isinstance(entry, Mapping):
        return None, None, f"{BASELINES_FILE} has no {name} predictions for {split}; {FIX}"
    rows, why = _rows(entry.get("predictions"), f"{BASELINES_FILE}: test_sets.{split}.{name}")
    classes = entry.get("classes")
    if rows is None or not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return None, None, why or f"{BASELINES_FILE}: test_sets.{split}.{name}.classes is malformed; {FIX}"
    try:
        summary = accuracy_summary(
            [r["predicted"] for r in rows], [r["acceptable"] for r in rows], [r["primary"] for r in rows], classes
        )
    except ValueError as exc:
        return None, None, f"{BASELINES_FILE}: test_sets.{split}.{name} cannot be scored ({exc}); {FIX}"
    return rows, summary, ""


def correct(rows: Rows, kind: str = "soft") -> list[bool]:
    """Each image's correctness, from its prediction and labels (never a stored flag)."""
    if kind == "soft":
        return [r["predicted"] in r["acceptable"] for r in rows]
    return [r["predicted"] == r["primary"] for r in rows]


def pair(model_rows: Rows, probe_rows: Rows, kind: str = "soft") -> tuple[dict[str, Any] | None, str]:
    """stats.paired of the model (a) against the probe (b) on the same images, matched by name; (None, why) when
    they were not made on the same images with the same labels."""
    by_name = {r["image"]: r for r in probe_rows}
    names = [r["image"] for r in model_rows]
    if sorted(names) != sorted(by_name) or len(set(names)) != len(names):
        return None, f"the model's metrics.json and {BASELINES_FILE} are not about the same images; {FIX}"
    others = [by_name[n] for n in names]
    for m, p in zip(model_rows, others):
        if m["primary"] != p["primary"] or sorted(m["acceptable"]) != sorted(p["acceptable"]):
            return None, f"{m['image']}: the model and the probe were scored against different labels; {FIX}"
    return stats.paired(correct(model_rows, kind), correct(others, kind)), ""
