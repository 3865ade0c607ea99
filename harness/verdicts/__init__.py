"""Thresholds -> verdicts: the judge reads each model's evidence and states criterion, threshold, value and status
(`criteria`: the table of criteria; `collect`: a run's evidence; `readers`: one value; `judge`: the verdicts)."""

from harness.verdicts.judge import judge, judged_table
from harness.verdicts.verdict import ERROR, FAIL, PASS, SKIP, UNGATED, Verdict, overall

__all__ = ["ERROR", "FAIL", "PASS", "SKIP", "UNGATED", "Verdict", "judge", "judged_table", "overall"]
