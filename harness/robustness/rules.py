"""[thresholds.robustness]: what the robustness evidence must show, and which of its verdicts gate.

```toml
[thresholds.robustness]
max_drop = 0.10            # soft accuracy may fall by at most this from the same photos clean
max_severity = 1           # judged at every measured severity up to this one (the worst drop counts)
gated = []                 # corruptions whose verdicts gate the gated models ("*": every one); [] = ablations only
object_margin = 0.0        # depends_on_object: lower 95% bound of (lost hiding the object - lost hiding the same
                           # shape elsewhere) must be above this
object_gated = false       # whether depends_on_object gates the gated models
faithfulness_margin = 0.0  # faithfulness: mean (insertion - deletion AUC) of the maps minus a random map's
faithfulness_gated = false
```
Every verdict of the three criteria is reported for every model; only those named here gate (an ablation by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.robustness.corruptions import CORRUPTIONS
from harness.validate import ConfigError, Reader, read_bool, read_int, read_num, read_str_list

EVERY = "*"


@dataclass(frozen=True)
class RobustnessRule:
    max_drop: float = 0.10
    max_severity: int = 1
    gated: tuple[str, ...] = ()
    object_margin: float = 0.0
    object_gated: bool = False
    faithfulness_margin: float = 0.0
    faithfulness_gated: bool = False

    def gates(self, corruption: str) -> bool:
        return EVERY in self.gated or corruption in self.gated

    @property
    def gated_corruptions(self) -> tuple[str, ...]:
        return tuple(CORRUPTIONS) if EVERY in self.gated else self.gated


def _gated(value, key: str, where: str) -> tuple[str, ...]:
    names = read_str_list(value, key, where, nonempty=False)
    bad = [n for n in names if n != EVERY and n not in CORRUPTIONS]
    if bad:
        raise ConfigError(
            f"{where}: {key} = {list(names)!r} names unknown corruptions {bad}; known: {list(CORRUPTIONS)} or '*'"
        )
    return names


FIELDS: dict[str, Reader] = {
    "max_drop": lambda v, k, w: read_num(v, k, w, 0, 1),
    "max_severity": lambda v, k, w: read_int(v, k, w, min=1, max=5),
    "gated": _gated,
    "object_margin": lambda v, k, w: read_num(v, k, w, -1, 1),
    "object_gated": read_bool,
    "faithfulness_margin": lambda v, k, w: read_num(v, k, w, -1, 1),
    "faithfulness_gated": read_bool,
}
