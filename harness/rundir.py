"""The run directory: its layout, `latest`, resume, jobs.json, model identity, and whether a step's output is current.

Every step records the `inputs` it was made from in its own JSON record; `step_state` / `is_current` are the one
place that compares a record with the inputs a rerun would use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import artifacts, provenance

CURRENT, ABSENT, STALE = "current", "absent", "stale"


def step_state(
    record: Path, inputs: Mapping[str, Any], outputs: Sequence[Path] = (), keys: Sequence[str] | None = None
) -> tuple[str, str]:
    """(CURRENT | ABSENT | STALE, why) of a step whose JSON `record` stores the `inputs` it was made from.

    ABSENT: the record or one of `outputs` does not exist. STALE: the record cannot be read, is not a JSON object,
    records no inputs, or its inputs differ from `inputs` (only the `keys` of them when given; a key whose wanted
    value is None is never current). `why` names the difference."""
    record = Path(record)
    if not record.is_file() or any(not Path(p).is_file() for p in outputs):
        return ABSENT, ""
    try:
        rec = artifacts.read_json(record)
    except (FileNotFoundError, ValueError) as exc:
        return STALE, str(exc)
    if not isinstance(rec, dict):
        return STALE, f"{record} is not a JSON object"
    recorded = rec.get("inputs")
    if not isinstance(recorded, dict):
        return STALE, f"{record} records no inputs"
    wanted = dict(inputs)
    if keys is not None:
        missing = [k for k in keys if wanted.get(k) is None]
        if missing:
            return STALE, f"nothing to compare for {', '.join(missing)}"
        recorded = {k: recorded.get(k) for k in keys}
        wanted = {k: wanted.get(k) for k in keys}
    changes = provenance.diff(recorded, wanted)
    return (STALE, provenance.describe(changes)) if changes else (CURRENT, "")


def is_current(
    record: Path, inputs: Mapping[str, Any], outputs: Sequence[Path] = (), keys: Sequence[str] | None = None
) -> bool:
    """True when `step_state` says CURRENT."""
    return step_state(record, inputs, outputs, keys)[0] == CURRENT
