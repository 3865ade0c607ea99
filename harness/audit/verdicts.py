"""The audit's verdicts, about the data rather than a model (Verdict with no backbone and no variant, so its id is the
set's name: the gate's test_independence[test_easy]): test_independence per test set and label_suspects per set,
each read from the per-image records of <run>/audit.json. A missing, unreadable or stale audit.json is ERROR."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.audit.readers import AUDIT_FILE, TRAIN, read_audit, read_independence, read_label_suspects
from harness.thresholds import EVERY_MODEL, AuditRule, Thresholds
from harness.verdicts.criteria import criterion
from harness.verdicts.verdict import ERROR, FAIL, PASS, SKIP, Verdict


def _gated(rule: AuditRule, split: str) -> bool:
    return EVERY_MODEL in rule.gated or split in rule.gated


def _verdict(name: str, split: str, value: float | None, note: str, threshold, gated: bool, detail: str, chance=None):
    c = criterion(name)
    if value is None:
        status = SKIP if note.startswith("skipped") else ERROR
        detail = "; ".join(filter(None, [note, detail]))
    elif threshold is None:
        status, detail = SKIP, "; ".join(filter(None, ["no threshold set", detail]))
    else:
        ok = value <= threshold + 1e-12 if c.comparison == "<=" else value >= threshold - 1e-12
        status = PASS if ok else FAIL
    return Verdict(name, "", split, c.comparison, threshold, value, status, gated, (AUDIT_FILE,), detail, chance=chance)


def audit_verdicts(run_dir: Path, thresholds: Thresholds, test_sets: Sequence[str]) -> list[Verdict]:
    """test_independence[<test set>] for every test set and label_suspects[<set>] for the training set and every
    test set, from <run_dir>/audit.json under [thresholds.audit]."""
    rule = thresholds.audit
    evidence, problem = read_audit(run_dir)
    has_train = bool((evidence or {}).get("has_train", True))
    out = []
    for split in test_sets:
        value, note = read_independence(evidence, split, rule) if evidence is not None else (None, problem)
        detail = (
            f"near copies of a training image (exact, perceptual hash within {rule.hash_distance_max} bits, or "
            f"similarity at least the training set's own {rule.near_copy_quantile:.0%} quantile); a set drawn like the "
            f"training set would have about {1 - rule.near_copy_quantile:.0%}"
        )
        out.append(
            _verdict(
                "test_independence",
                split,
                value,
                note,
                rule.near_copy_share_max,
                _gated(rule, split),
                detail,
                chance=1 - rule.near_copy_quantile,
            )
        )
    for split in ([TRAIN] if has_train else []) + list(test_sets):
        value, note = read_label_suspects(evidence, split) if evidence is not None else (None, problem)
        detail = "labels cleanlab flags whose suggested label the image does not accept (out-of-sample probe)"
        out.append(
            _verdict("label_suspects", split, value, note, rule.label_suspect_share_max, rule.labels_gated, detail)
        )
    return out
