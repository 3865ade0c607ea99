"""A report.json read back (by `harness compare`): every value the comparison uses checked for its shape once, at the
edge, so a hand-edited or truncated report ends in one line naming the file and the key (ReportShapeError, a
ValueError: exit 2), never in a harness bug.

Checked: the top-level tables (variants, protocol, verdicts); the protocol's profile, data, seeds and data_root; each
verdict's fields; each variant entry's identity, latency and saliency summaries, and each test set's summary and
per-image predictions. A test set's counts must be what its predictions give (an image is right when its predicted
label is one of its acceptable labels, strictly right when it is its primary label): the comparison stands on the
per-image evidence, as the verdicts do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

FIX = "rewrite it with `harness report RUN_DIR` (or compare another report)"


class ReportShapeError(ValueError):
    """A report.json value has the wrong shape; the message names the file and the key."""


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(file: str, key: str, value: Any, want: str) -> ReportShapeError:
    return ReportShapeError(f"{file}: {key} = {_short(value)} is not {want}; {FIX}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _table(file: str, key: str, v: Any, required: bool = False) -> dict[str, Any]:
    """v as a table ({} when absent and not required)."""
    if v is None and not required:
        return {}
    if not isinstance(v, dict):
        raise _fail(file, key, v, "a table")
    return v


def _strings(file: str, key: str, v: Any) -> None:
    if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
        raise _fail(file, key, v, "a list of names")


def _optional(file: str, key: str, v: Any, kinds: tuple[type, ...], want: str) -> None:
    if v is not None and (not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds)):
        raise _fail(file, key, v, want)


def check_report(report: Any, file: str) -> None:
    """ReportShapeError naming `file` and the key of the first value of `report` with the wrong shape."""
    if not isinstance(report, dict):
        raise ReportShapeError(f"{file}: a JSON {type(report).__name__}, not a harness report.json; {FIX}")
    for key, want in (("variants", dict), ("protocol", dict), ("verdicts", list)):
        if key not in report:
            raise ReportShapeError(f"{file}: not a harness report.json: the key {key!r} is missing; {FIX}")
        if not isinstance(report[key], want):
            raise _fail(file, key, report[key], "a list" if want is list else "a table")
    _protocol(report["protocol"], file)
    for i, v in enumerate(report["verdicts"]):
        _verdict(v, file, f"verdicts[{i}]")
    for folder, entry in report["variants"].items():
        _variant(entry, file, f"variants.{folder}")


def _protocol(proto: dict[str, Any], file: str) -> None:
    profile = _table(file, "protocol.profile", proto.get("profile"))
    _strings(file, "protocol.profile.test_sets", profile.get("test_sets"))
    data = _table(file, "protocol.data", proto.get("data"))
    _strings(file, "protocol.data.classes", data.get("classes"))
    _table(file, "protocol.data.test", data.get("test"))
    seeds = proto.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds)):
        raise _fail(file, "protocol.seeds", seeds, "a list of seeds")
    _optional(file, "protocol.data_root", proto.get("data_root"), (str,), "a folder name")


def _verdict(v: Any, file: str, key: str) -> None:
    if not isinstance(v, dict):
        raise _fail(file, key, v, "a verdict (a table)")
    for name in ("criterion", "id"):
        if not isinstance(v.get(name), str):
            raise _fail(file, f"{key}.{name}", v.get(name), "a name")
    for name in ("status", "model", "subject", "variant", "backbone", "comparison"):
        _optional(file, f"{key}.{name}", v.get(name), (str,), "a name")
    for name in ("value", "threshold"):
        value = v.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _fail(file, f"{key}.{name}", value, "a number")
    _optional(file, f"{key}.gated", v.get("gated"), (bool,), "true or false")


def _variant(entry: Any, file: str, key: str) -> None:
    if not isinstance(entry, dict):
        raise _fail(file, key, entry, "a model folder's entry (a table)")
    for name in ("model", "backbone", "variant"):
        _optional(file, f"{key}.{name}", entry.get(name), (str,), "a name")
    _optional(file, f"{key}.seed", entry.get("seed"), (int,), "a seed (an integer)")
    latency = _table(file, f"{key}.latency", entry.get("latency"))
    for provider, batches in _table(file, f"{key}.latency.by_provider", latency.get("by_provider")).items():
        where = f"{key}.latency.by_provider.{provider}"
        for batch, rec in _table(file, where, batches).items():
            _table(file, f"{where}.{batch}", rec, required=True)
    _summaries(entry.get("cam"), file, f"{key}.cam")
    for method, ev in _table(file, f"{key}.saliency", entry.get("saliency")).items():
        _summaries(ev, file, f"{key}.saliency.{method}")
    for split, ts in _table(file, f"{key}.test_sets", entry.get("test_sets")).items():
        _test_set(ts, file, f"{key}.test_sets.{split}")


def _summaries(ev: Any, file: str, key: str) -> None:
    for split, s in _table(file, f"{key}.summary", _table(file, key, ev).get("summary")).items():
        _table(file, f"{key}.summary.{split}", s, required=True)


def _test_set(ts: Any, file: str, key: str) -> None:
    ts = _table(file, key, ts, required=True)
    _strings(file, f"{key}.classes", ts.get("classes"))
    preds = ts.get("predictions")
    if not isinstance(preds, list) or not preds:
        raise _fail(file, f"{key}.predictions", preds, "a non-empty list of per-image predictions")
    hits = {"soft": 0, "strict": 0}
    for i, p in enumerate(preds):
        right = _prediction(p, file, f"{key}.predictions[{i}]")
        hits["soft"] += right["soft"]
        hits["strict"] += right["strict"]
    n = len(preds)
    if "n" in ts and ts["n"] != n:
        raise ReportShapeError(f"{file}: {key}.n = {_short(ts['n'])} but it has {n} per-image predictions; {FIX}")
    for kind in ("soft", "strict"):
        if kind not in ts:
            continue
        s = _table(file, f"{key}.{kind}", ts[kind], required=True)
        for name, truth in (("k", hits[kind]), ("value", hits[kind] / n)):
            value = s.get(name)
            if not isinstance(value, (int, float)) or not _number(value):
                raise _fail(file, f"{key}.{kind}.{name}", value, "a finite number")
            if abs(value - truth) > 1e-9:
                raise ReportShapeError(
                    f"{file}: {key}.{kind}.{name} = {_short(value)} but its {n} per-image predictions give "
                    f"{truth:.6g} ({hits[kind]}/{n}); {FIX}"
                )


def _prediction(p: Any, file: str, key: str) -> dict[str, bool]:
    """Whether one per-image prediction is right (soft, strict), its shape checked."""
    if not isinstance(p, dict):
        raise _fail(file, key, p, "a per-image prediction (a table)")
    for name in ("image", "predicted", "primary"):
        if not isinstance(p.get(name), str):
            raise _fail(file, f"{key}.{name}", p.get(name), "a name")
    _strings(file, f"{key}.acceptable", p.get("acceptable"))
    if not isinstance(p.get("acceptable"), list):
        raise _fail(file, f"{key}.acceptable", p.get("acceptable"), "a list of names")
    right = {"soft": p["predicted"] in p["acceptable"], "strict": p["predicted"] == p["primary"]}
    for kind in ("soft", "strict"):
        flag = p.get(f"{kind}_correct")
        if flag is not None and not isinstance(flag, bool):
            raise _fail(file, f"{key}.{kind}_correct", flag, "true/false")
        if flag is not None and flag != right[kind]:
            raise ReportShapeError(
                f"{file}: {key}.{kind}_correct = {flag} but predicted {p['predicted']!r} says {right[kind]}; {FIX}"
            )
    probs = p.get("probabilities")
    if probs is not None and (not isinstance(probs, Mapping) or not all(_number(x) for x in probs.values())):
        raise _fail(file, f"{key}.probabilities", probs, "a table of class -> probability")
    return right
