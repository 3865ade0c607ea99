"""The `protocol` verdict: the run as a whole can be judged. run.json's gated models, thresholds and identity still
match the seal recorded when the run was made (harness.seal), a run made gating a model still gates one, and the run
has a model to judge. Any problem is a gated ERROR naming run.json or the run directory, so an emptied or edited
protocol can never turn a failing run into a PASS or an ungated exit 0; a sound protocol is a PASS that is not gated
(it adds nothing to the models' verdicts). A run made without any gated model stays ungated; a run.json without a
seal (an older harness, or written by hand) is reported SKIP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness import artifacts
from harness.seal import created_gated, protocol_problems
from harness.verdicts.criteria import criterion
from harness.verdicts.verdict import ERROR, PASS, SKIP, Verdict

NAME = "protocol"


def _verdict(status: str, gated: bool, value: float | None, detail: str) -> Verdict:
    return Verdict(NAME, "", "", criterion(NAME).comparison, 0.0, value, status, gated, ("run.json",), detail)


def protocol_verdict(run_dir: Path, gated_now: Sequence[str]) -> Verdict:
    """The run's protocol verdict; `gated_now`: the gated entries of the thresholds in force (run.json's, or a
    --thresholds file's)."""
    path = Path(run_dir) / "run.json"
    try:
        proto = artifacts.read_json(path)
    except (FileNotFoundError, ValueError, OSError):
        return _verdict(SKIP, False, None, f"skipped: no readable run.json in {run_dir}; the protocol is not checked")
    if not isinstance(proto, dict):
        return _verdict(ERROR, True, None, f"{path}: not a JSON object; rerun harness run")
    problems = protocol_problems(proto, Path(run_dir), list(gated_now))
    if problems:
        return _verdict(ERROR, True, float(len(problems)), "; ".join(problems))
    created = created_gated(proto)
    if created is None:
        return _verdict(
            SKIP,
            False,
            0.0,
            "skipped: run.json records no protocol seal (made by an older harness, or by hand): its gated models "
            "and thresholds cannot be checked against the run as it was made",
        )
    what = f"gated at creation: {', '.join(created)}" if created else "made without a gated model (ungated)"
    # gated only when it fails: a sound protocol adds nothing to the models' verdicts, an unsound one overrules them
    return _verdict(PASS, False, 0.0, f"run.json matches the protocol sealed when the run was made ({what})")
