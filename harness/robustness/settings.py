"""The [robustness] table of a profile: which corruptions at which severities, object masking, faithfulness curves.

```toml
[robustness]
enabled = true          # the robustness step runs after the saliency steps (harness run, harness check)
full = false            # true: every corruption at severities 1..5 (ImageNet-C's grid); false: `severity` only
severity = 1            # the mild severity of the default suite
corruptions = ["gaussian_noise", "defocus_blur", ...]   # default: every registered corruption
masking = true          # hide the labelled regions vs the same shape placed elsewhere; keep only the regions
fill = "grey"           # what hides a region: "grey" (0.5) or "blur" (a strong Gaussian blur of the photo)
draws = 8               # random placements of the hidden shape per photo (the control)
faithfulness = true     # deletion / insertion curves of every saliency method's stored maps, beside a random map
steps = 10              # points of each curve after the first
seed = 0                # the corruptions' noise, the random placements and the random maps
batch = 32              # images per onnxruntime call
```
Validated once, at the edge, with ConfigError naming the key and the value; `--set robustness.full=true` on the
command line asks for the full grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from harness.robustness.corruptions import CORRUPTIONS, SEVERITIES
from harness.validate import Reader, from_table, read_bool, read_choice, read_int, read_str_list, read_table

FILLS = ("grey", "blur")
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class RobustnessSettings:
    enabled: bool = True
    full: bool = False
    severity: int = 1
    corruptions: tuple[str, ...] = tuple(CORRUPTIONS)
    masking: bool = True
    fill: str = "grey"
    draws: int = 8
    faithfulness: bool = True
    steps: int = 10
    seed: int = 0
    batch: int = 32

    @property
    def severities(self) -> tuple[int, ...]:
        """The severities measured: 1..5 with `full`, else the mild one."""
        return SEVERITIES if self.full else (self.severity,)

    def corruption_inputs(self) -> dict[str, Any]:
        """What the corruption and masking evidence is made from (recorded in robustness.json's inputs)."""
        return {
            "corruptions": list(self.corruptions),
            "severities": list(self.severities),
            "seed": self.seed,
            "masking": {"fill": self.fill, "draws": self.draws} if self.masking else None,
        }

    def faithfulness_inputs(self) -> dict[str, Any]:
        """What the faithfulness evidence is made from (besides the model, the images and the maps)."""
        return {"steps": self.steps, "seed": self.seed}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS: dict[str, Reader] = {
    "enabled": read_bool,
    "full": read_bool,
    "severity": lambda v, k, w: read_int(v, k, w, min=1, max=5),
    "corruptions": lambda v, k, w: read_str_list(v, k, w, list(CORRUPTIONS)),
    "masking": read_bool,
    "fill": lambda v, k, w: read_choice(v, k, w, FILLS),
    "draws": lambda v, k, w: read_int(v, k, w, min=1, max=100),
    "faithfulness": read_bool,
    "steps": lambda v, k, w: read_int(v, k, w, min=2, max=100),
    "seed": lambda v, k, w: read_int(v, k, w, min=0, max=MAX_SEED),
    "batch": lambda v, k, w: read_int(v, k, w, min=1, max=1024),
}


def parse_robustness(raw: Any, where: str) -> RobustnessSettings:
    """Validate a [robustness] table (or RobustnessSettings.to_dict() output, as recorded in a run)."""
    d: Mapping[str, Any] = read_table(raw if raw is not None else {}, "robustness", where)
    return from_table(RobustnessSettings, d, where, "robustness", FIELDS)
