"""report.json's `robustness` section, computed from every model folder's robustness.json / faithfulness.json records
(harness.robustness.measures), with the status of the matching verdict. Read by the HTML report, `harness compare`
and the model card.

```
robustness = {
  "corruptions": {name: {title, source, definition, constants}},   the measured ones, in registry order
  "severities": [1],                                               every severity measured in some folder
  "corruption": [ {model, folder, seed, gated, split, corruption, severity, n, clean_soft, soft, clean_strict, strict,
                   drop, drop_interval, mcnemar_p, right_to_wrong, wrong_to_right, thumbs: {image: path}, status} ],
  "masking":    [ {model, folder, seed, gated, split, n, masked, object_lost, random_lost, random_majority_lost,
                   difference, difference_interval, mcnemar_p, kept, p_label_drop, p_label_drop_random, overlap,
                   status} ],
  "faithfulness": [ {model, folder, seed, gated, method, split, n, deletion, insertion, deletion_random,
                     insertion_random, margin, wins, losses, sign_test_p, status} ],
  "per_image": {folder: {split: {images, acceptable, clean: [predicted], corrupted: {name: {severity: [predicted]}}}}},
  "problems": {folder/file: why the file was not used},
}
```
Thumbnail paths are relative to the run directory; `status` is the verdict's (None where no verdict judges it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.robustness.corruptions import CORRUPTIONS
from harness.robustness.files import FAITHFULNESS_FILE, ROBUSTNESS_FILE
from harness.robustness.judging import DEPENDS_ON_OBJECT, FAITHFULNESS, ROBUSTNESS
from harness.robustness.measures import corruption_summary, faithfulness_summary, masking_summary
from harness.robustness.readers import load


def _status(verdicts: Sequence[Any], criterion: str, model: str, subject: str) -> tuple[str | None, bool]:
    v = next((v for v in verdicts if v.criterion == criterion and v.model == model and v.subject == subject), None)
    return (v.status, bool(v.gated)) if v is not None else (None, False)


def robustness_section(groups: Mapping[str, Sequence[Any]], verdicts: Sequence[Any]) -> dict[str, Any]:
    """The `robustness` section of report.json from the seed runs of every model (harness.verdicts.collect)."""
    out: dict[str, Any] = {
        "corruptions": {},
        "severities": [],
        "corruption": [],
        "masking": [],
        "faithfulness": [],
        "per_image": {},
        "problems": {},
    }
    measured: set[str] = set()
    for model, runs in groups.items():
        for run in runs:
            ident = {"model": model, "folder": run.folder.name, "seed": run.seed}
            rob, why_r = load(run, ROBUSTNESS_FILE)
            faith, why_f = load(run, FAITHFULNESS_FILE)
            for file, ev, why in ((ROBUSTNESS_FILE, rob, why_r), (FAITHFULNESS_FILE, faith, why_f)):
                if ev is None and (run.folder / file).exists():
                    out["problems"][f"{run.folder.name}/{file}"] = why
            try:
                if rob is not None:
                    measured |= set(rob.get("corruptions") or [])
                    out["severities"] = sorted(set(out["severities"]) | {int(s) for s in rob.get("severities") or []})
                    _corruptions(out, ident, rob, verdicts)
                    _masking(out, ident, rob, verdicts)
                if faith is not None:
                    _faithfulness(out, ident, faith, verdicts)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                out["problems"][run.folder.name] = f"malformed robustness evidence ({exc})"
    out["corruptions"] = {
        n: {"title": c.title, "source": c.source, "definition": c.definition, "constants": list(c.constants)}
        for n, c in CORRUPTIONS.items()
        if n in measured
    }
    return out


def _corruptions(out: dict[str, Any], ident: dict[str, Any], ev: Mapping[str, Any], verdicts: Sequence[Any]) -> None:
    per: dict[str, Any] = {}
    for split, records in (ev.get("images") or {}).items():
        per[split] = {
            "images": [r.get("image") for r in records],
            "acceptable": [r.get("acceptable") for r in records],
            "clean": [(r.get("clean") or {}).get("predicted") for r in records],
            "corrupted": {},
        }
        for c in ev.get("corruptions") or []:
            status, gated = _status(verdicts, ROBUSTNESS, ident["model"], f"{split}-{c}")
            for s in ev.get("severities") or []:
                m = corruption_summary(records, c, int(s))
                thumbs = {
                    str(r.get("image")): f"{ident['folder']}/{a['thumb']}"
                    for r in records
                    if isinstance(a := ((r.get("corrupted") or {}).get(c) or {}).get(str(s)), Mapping)
                    and a.get("thumb")
                }
                out["corruption"].append(
                    ident
                    | {"gated": gated, "split": split, "corruption": c, "severity": int(s)}
                    | m
                    | {"thumbs": thumbs, "status": status}
                )
                per[split]["corrupted"].setdefault(c, {})[str(s)] = [
                    ((r.get("corrupted") or {}).get(c) or {}).get(str(s), {}).get("predicted") for r in records
                ]
    out["per_image"][ident["folder"]] = per


def _masking(out: dict[str, Any], ident: dict[str, Any], ev: Mapping[str, Any], verdicts: Sequence[Any]) -> None:
    for split, entry in (ev.get("masking") or {}).items():
        if not entry.get("has_regions"):
            continue
        status, gated = _status(verdicts, DEPENDS_ON_OBJECT, ident["model"], split)
        out["masking"].append(
            ident | {"gated": gated, "split": split} | masking_summary(entry.get("images") or []) | {"status": status}
        )


def _faithfulness(out: dict[str, Any], ident: dict[str, Any], ev: Mapping[str, Any], verdicts: Sequence[Any]) -> None:
    for method, info in (ev.get("methods") or {}).items():
        for split, records in (ev.get("images") or {}).items():
            status, gated = _status(verdicts, FAITHFULNESS, ident["model"], f"{method}-{split}")
            row = ident | {"gated": gated, "method": method, "split": split}
            if isinstance(info, Mapping) and info.get("skipped"):
                out["faithfulness"].append(row | {"n": 0, "skipped": info["skipped"], "status": status})
            else:
                out["faithfulness"].append(row | faithfulness_summary(records, method) | {"status": status})
