"""What the audit says, computed from audit.json's per-image records under [thresholds.audit]: per test set a plain
statement of what it measures, with its figures beside the training set's own reference; the near copies, the
duplicates within each set, the label suspects (each with its thumbnails) and the dataset's health lines. This is
report.json's `audit` and what `harness audit` prints."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.audit import hashes, health
from harness.audit.readers import (
    AUDIT_FILE,
    TRAIN,
    Malformed,
    near_copies,
    read_audit,
    read_independence,
    read_label_suspects,
    records,
    reference,
    suspects,
)
from harness.report.wording import BOOK_CLASSES
from harness.thresholds import EVERY_MODEL, AuditRule, Thresholds

RECALL, GENERALISATION, MIXED, UNKNOWN = "recall", "generalisation", "mixed", "unknown"
MAX_SUSPECTS = 10  # per set, lowest label quality first


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    v = [float(x) for x in values]
    return {"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None


def _thumbs(evidence: Mapping[str, Any]) -> dict[str, str | None]:
    return {
        str(r.get("image")): r.get("thumbnail")
        for s in (evidence.get("sets") or {}).values()
        if isinstance(s, Mapping)
        for r in s.get("images") or []
        if isinstance(r, Mapping)
    }


def within_set(evidence: Mapping[str, Any], split: str, rule: AuditRule) -> list[dict[str, Any]]:
    """Pairs of images of one set that are exact copies (same bytes or pixels) or within the rule's perceptual-hash
    distance of each other (mirror included)."""
    recs = records(evidence, split)
    pairs = [(r.get("phash") or "0" * 16, r.get("phash_mirror") or "0" * 16) for r in recs]
    dist = hashes.mirrored_distances(pairs, pairs) if recs else np.zeros((0, 0), dtype=int)
    out = []
    for i in range(len(recs)):
        for j in range(i + 1, len(recs)):
            a, b = recs[i], recs[j]
            exact = a.get("sha256") == b.get("sha256") or a.get("pixels") == b.get("pixels")
            if exact or dist[i][j] <= rule.hash_distance_max:
                how = "exact copy" if exact else "perceptual hash"
                out.append({"images": [a["image"], b["image"]], "how": how, "hash_distance": int(dist[i][j])})
    return out


def _kind(share: float, median: float, ref_median: float | None, rule: AuditRule) -> str:
    if share > (rule.near_copy_share_max if rule.near_copy_share_max is not None else 0.75) + 1e-12:
        return RECALL
    if ref_median is not None and median < ref_median and share <= 1 - rule.near_copy_quantile + 1e-12:
        return GENERALISATION
    return MIXED


def statement(split: str, kind: str, n: int, near: int, sim: Mapping[str, float] | None, ref, item: str) -> str:
    """The plain sentence of what a test set measures, with its figures."""
    items = f"{item}s"
    scenes = "scenes" if item == "photo" else f"{item}s"
    if kind == UNKNOWN or sim is None or ref is None:
        return f"{split} ({n} {items}): cannot be compared with training {items} (the dataset has no training set)."
    figures = (
        f"median similarity to the nearest training {item} {sim['median']:.2f} (range {sim['min']:.2f}-"
        f"{sim['max']:.2f}), against {ref['median']:.2f} for a training {item} to its nearest other; {near} of {n} "
        f"are near copies of a training {item}"
    )
    if kind == RECALL:
        return (
            f"{split} measures recall of seen {scenes}, not generalisation: {figures}. Its accuracy says how well the "
            f"model recognises {items} like those it was trained on."
        )
    if kind == GENERALISATION:
        return f"{split} measures generalisation: its {items} are further from the training {items} ({figures})."
    return (
        f"{split} is partly close to the training {items} ({figures}): its accuracy mixes recall of seen {scenes} "
        f"and generalisation."
    )


def _health(evidence: Mapping[str, Any], rule: AuditRule, item: str) -> list[dict[str, Any]]:
    items = f"{item}s"
    sets = [s for s in (evidence.get("sets") or {}) if isinstance(s, str)]
    train_classes = list(evidence.get("classes") or [])
    lines: list[dict[str, Any]] = []
    by_sha: dict[str, list[str]] = {}
    for split in sets:
        recs = records(evidence, split)
        names = [r["image"] for r in recs]
        classes = train_classes if split == TRAIN else sorted({r["label"] for r in recs})
        lines.append(health.class_line(split, [r["label"] for r in recs], classes, items))
        lines += health.far_lines(split, names, [r.get("size") for r in recs], items)
        lines += health.quality_lines(split, names, [r.get("properties") for r in recs], items)
        if split != TRAIN and evidence.get("has_train"):
            seen = [set(r.get("acceptable") or []) | {r["label"]} for r in recs]
            line = health.unseen_line(split, seen, train_classes, names)
            if line:
                lines.append(line)
        for r in recs:
            by_sha.setdefault(str(r.get("sha256")), []).append(r["image"])
    for files in (f for f in by_sha.values() if len(f) > 1):
        lines.append(
            {
                "check": "duplicate_files",
                "set": "",
                "files": files,
                "text": f"exact duplicate files: {' = '.join(files)}",
            }
        )
    return lines


def summarize(evidence: Mapping[str, Any] | None, rule: AuditRule, problem: str = "") -> dict[str, Any]:
    """report.json's `audit`. Unusable evidence: {available: False, file, problem}. Else {available: True, file,
    item ('photo' for the bundled book dataset, else 'image'), reference (each training image to its nearest other:
    median, min, max, n, values; the near-copy `level` and its `quantile`), rule, reason (why gated or not), sets
    ({test set: n, similarity and hash_distance (median, min, max), near_copies [{image, label, source, how,
    similarity, hash_distance, thumb, source_thumb}], near_copy_share, note, kind ('recall', 'generalisation',
    'mixed', 'unknown'), gated, statement, per_image [{image, label, nearest_train, hash_nearest_train}]}), within
    ({set: duplicate pairs}), suspects ({set: share, note, flagged, top [{image, label, suggested, probability,
    quality, acceptable, thumb}]}), labels (the probe's method, folds, notes), health [{check, set, files, text}],
    embedding, seconds, created}. Thumbnails are paths relative to the run directory."""
    if evidence is None:
        return {"available": False, "file": AUDIT_FILE, "problem": problem}
    item = "photo" if set(evidence.get("classes") or []) == BOOK_CLASSES else "image"
    try:
        return _summary(evidence, rule, item)
    except Malformed as exc:
        return {"available": False, "file": AUDIT_FILE, "problem": str(exc)}


def _summary(evidence: Mapping[str, Any], rule: AuditRule, item: str) -> dict[str, Any]:
    thumbs = _thumbs(evidence)
    level, loo = reference(evidence, rule)
    ref: dict[str, Any] | None = None
    if loo:
        ref = dict(_spread(loo) or {}) | {"level": level, "quantile": rule.near_copy_quantile, "n": len(loo)}
        ref["values"] = sorted(float(v) for v in loo)  # each training image to its nearest other: the reference
    splits = [s for s in (evidence.get("sets") or {}) if s != TRAIN]
    out_sets: dict[str, Any] = {}
    for split in splits:
        recs = records(evidence, split)
        sims = [r["nearest_train"]["similarity"] for r in recs if r.get("nearest_train")]
        dists = [r["hash_nearest_train"]["distance"] for r in recs if r.get("hash_nearest_train")]
        near = near_copies(evidence, split, rule) if evidence.get("has_train") else []
        share, why = read_independence(evidence, split, rule)
        sim = _spread(sims)
        kind = UNKNOWN if share is None or sim is None else _kind(share, sim["median"], (ref or {}).get("median"), rule)
        out_sets[split] = {
            "n": len(recs),
            "similarity": sim,
            "hash_distance": _spread(dists),
            "near_copies": [
                c | {"thumb": thumbs.get(c["image"]), "source_thumb": thumbs.get(c["source"])} for c in near
            ],
            "near_copy_share": share,
            "note": why,
            "kind": kind,
            "gated": EVERY_MODEL in rule.gated or split in rule.gated,
            "statement": statement(split, kind, len(recs), len(near), sim, ref, item),
            "per_image": [
                {
                    "image": r["image"],
                    "label": r["label"],
                    "nearest_train": r.get("nearest_train"),
                    "hash_nearest_train": r.get("hash_nearest_train"),
                }
                for r in recs
            ],
        }
    every = [TRAIN] * bool(evidence.get("has_train")) + splits
    suspect = {}
    for split in every:
        share, why = read_label_suspects(evidence, split)
        found = [s | {"thumb": thumbs.get(s["image"])} for s in suspects(evidence, split)]
        suspect[split] = {"share": share, "note": why, "flagged": len(found), "top": found[:MAX_SUSPECTS]}
    within = {split: within_set(evidence, split, rule) for split in every}
    gated = [s for s in splits if out_sets[s]["gated"]]
    default_reason = (
        f"test_independence gates {', '.join(gated)} ([thresholds.audit] gated)"
        if gated
        else "test_independence is reported, not gated: [thresholds.audit] gated names no test set"
    )
    return {
        "available": True,
        "file": AUDIT_FILE,
        "item": item,
        "reference": ref,
        "rule": {k: getattr(rule, k) for k in ("near_copy_quantile", "hash_distance_max", "near_copy_share_max")},
        "reason": rule.reason or default_reason,
        "sets": out_sets,
        "within": within,
        "suspects": suspect,
        "labels": evidence.get("labels") or {},
        "health": _health(evidence, rule, item),
        "embedding": evidence.get("embedding") or {},
        "seconds": evidence.get("seconds") or {},
        "created": evidence.get("created"),
    }


def audit_report(run_dir: Path, thresholds: Thresholds) -> dict[str, Any]:
    """report.json's `audit` for a run directory: its audit.json summarised (or why it cannot be)."""
    evidence, problem = read_audit(Path(run_dir))
    return summarize(evidence, thresholds.audit, problem)


def lines(summary: Mapping[str, Any]) -> list[str]:
    """What `harness audit` prints: the reference, a statement per test set, the suspects, the health lines."""
    if not summary.get("available"):
        return [f"audit: not available ({summary.get('problem')})"]
    out = []
    ref, item = summary.get("reference"), summary.get("item", "image")
    if ref:
        out.append(
            f"reference: a training {item}'s similarity to its nearest other training {item}: median "
            f"{ref['median']:.2f} (range {ref['min']:.2f}-{ref['max']:.2f}, n={ref['n']}); near-copy level "
            f"{ref['level']:.3f} (quantile {ref['quantile']:g})"
        )
    for s in summary["sets"].values():
        out.append(s["statement"])
        for c in s["near_copies"][:5]:
            sim = f" similarity {c['similarity']:.3f}" if c["similarity"] is not None else ""
            out.append(f"  near copy: {c['image']} ~ {c['source']} ({c['how']}{sim})")
        if len(s["near_copies"]) > 5:
            out.append(f"  ... and {len(s['near_copies']) - 5} more near copies")
    for split, pairs in summary["within"].items():
        for p in pairs[:5]:
            out.append(f"duplicate within {split}: {p['images'][0]} ~ {p['images'][1]} ({p['how']})")
    for split, s in summary["suspects"].items():
        for x in s["top"][:5]:
            tag = " (suggested label acceptable: ambiguous primary label)" if x["acceptable"] else ""
            out.append(
                f"label suspect in {split}: {x['image']} labelled {x['label']}, suggested {x['suggested']} "
                f"(p={x['probability']:.2f}){tag}"
            )
    out += [f"health: {h['text']}" for h in summary["health"]]
    out.append(f"why gated or not: {summary['reason']}")
    return out
