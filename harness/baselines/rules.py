"""[thresholds.probe]: when a model beats the linear probe (criterion beats_probe[<model>-<test set>]).

```toml
[thresholds.probe]
soft_margin = 0.0   # the model's soft accuracy must be at least the probe's minus this
mcnemar_p = 0.05    # ... and not significantly worse: the exact McNemar test on the images where they disagree
                    # gives p >= this whenever the model is right on fewer of them than the probe
gated = false       # whether beats_probe gates the gated models (false: an ablation, reported, never failing)
```
With soft_margin 0 the first clause already implies the second (a model right on fewer disagreements than the probe
has the lower soft accuracy); a margin lets a model a photo or two below the probe pass unless McNemar says it is
significantly worse.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.validate import Reader, read_bool, read_num


@dataclass(frozen=True)
class ProbeRule:
    soft_margin: float = 0.0
    mcnemar_p: float = 0.05
    gated: bool = False


FIELDS: dict[str, Reader] = {
    "soft_margin": lambda v, k, w: read_num(v, k, w, 0, 1),
    "mcnemar_p": lambda v, k, w: read_num(v, k, w, 0, 1),
    "gated": read_bool,
}
