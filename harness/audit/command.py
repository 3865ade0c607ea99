"""`harness audit [--data DIR] [--out DIR]`: the data audit on its own, judged by a profile's [thresholds.audit]
(fitted to the dataset's test sets, overridden by a --thresholds file). Returns what the command prints and its
verdicts; the audit is the same step `harness run` and `harness check` run first (harness.audit.step)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import runlock, verify
from harness.audit.statements import summarize
from harness.audit.step import audit_step, load_for_audit
from harness.audit.verdicts import audit_verdicts
from harness.config import read_profile_toml
from harness.report.build import read_protocol, thresholds_of_run
from harness.thresholds import check_user_file, fit_to_run, parse_thresholds
from harness.validate import read_table
from harness.verdicts.verdict import ERROR, FAIL, Verdict


@dataclass(frozen=True)
class AuditResult:
    out: Path  # the folder holding audit.json
    summary: dict[str, Any]  # harness.audit.statements.summarize
    verdicts: tuple[Verdict, ...]
    notes: tuple[str, ...]  # thresholds set aside for this dataset

    @property
    def failed(self) -> bool:
        """A gated data criterion failed or could not be read."""
        return any(v.gated and v.status in (FAIL, ERROR) for v in self.verdicts)


def audit_dataset(
    data_root: Path,
    out: Path | None = None,
    profile: str = "cpu",
    thresholds_file: Path | None = None,
    force: bool = False,
    reports: Path = Path("reports"),
    log: Callable[[str], None] | None = None,
) -> AuditResult:
    """Load the dataset (its loaders' DataError on unreadable input), audit it into `out` (default
    reports/audit/<dataset folder name>: reused while the data is the same) and judge it: by the profile's
    [thresholds.audit] fitted to the dataset's test sets, or, when `out` is a run directory, by its recorded
    thresholds on its test sets (either overridden by `thresholds_file`)."""
    out = Path(out) if out is not None else Path(reports) / "audit" / (Path(data_root).resolve().name or "data")
    in_run = (out / "run.json").is_file()  # a run directory: its test sets and thresholds; writes go into its ledger
    notes: list[str] = []
    if in_run:
        thresholds = thresholds_of_run(out, thresholds_file)
        train, tests = load_for_audit(data_root, read_protocol(out)["profile"].get("test_sets") or None)
    else:
        raw, source = read_profile_toml(profile)
        table = read_table(raw.get("thresholds", {}), "thresholds", source)
        thresholds = parse_thresholds(table, source, thresholds_file)
        train, tests = load_for_audit(data_root)
        check_user_file(thresholds_file, list(tests))
        thresholds, notes = fit_to_run(thresholds, list(tests))
    with runlock.hold(out), verify.recording(out) if in_run else contextlib.nullcontext():
        evidence = audit_step(out, train, tests, data_root, force=force, log=log)
    verdicts = audit_verdicts(out, thresholds, list(tests))
    return AuditResult(out, summarize(evidence, thresholds.audit), tuple(verdicts), tuple(notes))
