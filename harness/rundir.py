"""The run directory: its layout, `latest`, resume, jobs.json, model identity, and whether a step's output is current.

Every step records the `inputs` it was made from in its own JSON record; `step_state` / `is_current` are the one
place that compares a record with the inputs a rerun would use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import artifacts, provenance
from harness.config import split_variant

CURRENT, ABSENT, STALE = "current", "absent", "stale"


@dataclass(frozen=True)
class ModelId:
    """Identity of a trained model: (backbone, init, level, seed). The one place its names are built; nothing parses
    them back (records carry the fields)."""

    backbone: str
    init: str
    level: str
    seed: int

    @classmethod
    def of(cls, backbone: str, variant: str, seed: int) -> ModelId:
        init, level = split_variant(variant)
        return cls(backbone, init, level, int(seed))

    @property
    def variant(self) -> str:
        """'<init>-<level>', as named on the command line and in profiles."""
        return f"{self.init}-{self.level}"

    @property
    def key(self) -> str:
        """'<backbone>-<init>-<level>': the model over its seeds, as a report groups it."""
        return f"{self.backbone}-{self.variant}" if self.backbone else self.variant

    @property
    def folder(self) -> str:
        """'<backbone>-<init>-<level>-s<seed>': its folder in the run directory."""
        return f"{self.key}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "init": self.init, "level": self.level, "seed": self.seed}


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
