"""A verdict (criterion, model, test set, threshold, value, status) and a run's overall verdict over the gated ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, ERROR, SKIP = "PASS", "FAIL", "ERROR", "SKIP"
UNGATED = "UNGATED"  # the overall verdict of a run where nothing is gated (e.g. the smoke profile)


@dataclass(frozen=True)
class Verdict:
    criterion: str  # a name of harness.verdicts.criteria.CRITERIA, e.g. "accuracy"; the gate's test is test_<criterion>
    variant: str  # e.g. "imagenet-all" (over all seeds)
    subject: str  # test set, or "" when the criterion is not per test set
    comparison: str  # ">=", ">" or "<="
    threshold: float | None
    value: float | None  # the aggregate (worst seed by default) that was compared
    status: str  # PASS / FAIL / ERROR / SKIP
    gated: bool  # False: an informational ablation, reported but never failing the gate
    evidence: tuple[str, ...]  # files the value was read from, relative to the run directory
    detail: str = ""
    per_seed: dict[str, float | None] = field(default_factory=dict)
    backbone: str = ""  # identity of a trained model is (backbone, variant, seed)
    chance: float | None = None  # the chance level the value stands beside (constant answer, uniform map)

    @property
    def model(self) -> str:
        return model_key(self.backbone, self.variant)

    @property
    def id(self) -> str:
        """'<model>-<test set>', '<model>', '<test set>' for a verdict about the data (no model: harness.audit), or
        'run' for a verdict about the run as a whole (no model, no subject)."""
        return "-".join(p for p in (self.model, self.subject) if p) or "run"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"id": self.id, "model": self.model}


def model_key(backbone: str, variant: str) -> str:
    """A model over its seeds, as verdicts and reports group it: 'backbone-variant' (the variant alone without one)."""
    return f"{backbone}-{variant}" if backbone else variant


def overall(verdicts: Sequence[Verdict]) -> str:
    gated = [v for v in verdicts if v.gated]
    if not gated:
        return UNGATED  # e.g. the smoke profile: everything is reported, nothing is gated
    if any(v.status == ERROR for v in gated):
        return ERROR
    return FAIL if any(v.status == FAIL for v in gated) else PASS
