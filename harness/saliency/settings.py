"""The [saliency] table of a profile: which saliency methods a run computes, their parameters, the sanity check.

```toml
[saliency]
methods = ["gradcam", "occlusion"]   # gradcam needs the PyTorch model (harness run); the others run on any ONNX
sanity = true                        # Adebayo et al. 2018: maps of the model with its last layer(s) randomised
sanity_layers = 1
sanity_images = 20                   # at most this many scored images per method (the sweep is repeated for each)
all_maps = false                     # black-box methods on a test set without labelled regions: only `examples` maps
examples = 6                         # (the report's overlays); true computes every photo's map
black_box_scope = "all"              # "gated": black-box maps (and their sanity, faithfulness) of gated variants only
[saliency.occlusion]                 # overrides of the method's defaults (harness.saliency.registry)
window = 32
stride = 16
```
Validated once, at the edge, with ConfigError naming the key and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.saliency.registry import GRADCAM, known_methods, method_info, resolve_params
from harness.validate import (
    ConfigError,
    Reader,
    check_keys,
    from_table,
    read_bool,
    read_choice,
    read_int,
    read_str_list,
    read_table,
)

MAX_SEED = 2**32 - 1
BLACK_BOX_SCOPES = ("all", "gated")


@dataclass(frozen=True)
class SaliencySettings:
    methods: tuple[str, ...] = (GRADCAM,)
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # method -> its resolved parameters
    sanity: bool = True
    sanity_layers: int = 1
    sanity_seed: int = 0
    sanity_images: int = 20
    # A black-box map costs hundreds of forward passes; on a test set without labelled regions nothing is scored, so
    # only the report's example overlays are computed (6 by default: 8 models x 6 stay under the report's 60 embedded
    # overlays) unless all_maps. Sets with regions always get every map (they are scored).
    all_maps: bool = False
    examples: int = 6
    # Which trained variants get the black-box methods (each map costs hundreds of onnxruntime passes, its sanity
    # check as many again): "all", or "gated": only the variants thresholds.gated names; the others keep Grad-CAM
    # (white-box, a few passes a photo), and their black-box criteria are reported SKIP, named as not computed.
    # harness check judges one ONNX model, gated: it always gets them.
    black_box_scope: str = "all"

    @property
    def black_box(self) -> tuple[str, ...]:
        """The methods that run through onnxruntime (every one but Grad-CAM)."""
        return tuple(m for m in self.methods if method_info(m).black_box)

    def sanity_inputs(self) -> dict[str, Any] | None:
        """What a sanity check is made from (recorded in each saliency evidence file's inputs); None when off."""
        if not self.sanity:
            return None
        return {"layers": self.sanity_layers, "seed": self.sanity_seed, "images": self.sanity_images}

    def maps_inputs(self) -> dict[str, Any]:
        """Which black-box maps are computed on a test set without regions (recorded in the evidence's inputs)."""
        return {"all_maps": self.all_maps, "examples": self.examples}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = {k: dict(v) for k, v in self.params.items()}
        return d


def black_box_computed(recorded: Any, gated: bool) -> bool:
    """Whether a trained variant's job computed the black-box methods, from a recorded [saliency] table (run.json /
    config.json form; a table from before black_box_scope, or none, means every variant): every variant under
    "all", the gated ones under "gated". The one rule the driver, resume and the verdicts all read."""
    scope = recorded.get("black_box_scope", "all") if isinstance(recorded, Mapping) else "all"
    return gated or scope != "gated"


SANITY_FIELDS: dict[str, Reader] = {
    "sanity": read_bool,
    "sanity_layers": lambda v, k, w: read_int(v, k, w, min=1, max=8),
    "sanity_seed": lambda v, k, w: read_int(v, k, w, min=0, max=MAX_SEED),
    "sanity_images": lambda v, k, w: read_int(v, k, w, min=1),
}

MAPS_FIELDS: dict[str, Reader] = {
    "all_maps": read_bool,
    "examples": lambda v, k, w: read_int(v, k, w, min=1, max=1000),
    "black_box_scope": lambda v, k, w: read_choice(v, k, w, BLACK_BOX_SCOPES),
}


def parse_saliency(raw: Any, where: str) -> SaliencySettings:
    """Validate a [saliency] table (or SaliencySettings.to_dict() output, as recorded in a run)."""
    d = read_table(raw if raw is not None else {}, "saliency", where)
    recorded = d.pop("params", None)  # to_dict() form: {"params": {"occlusion": {...}}}
    if recorded is not None:
        for k, v in read_table(recorded, "saliency.params", where).items():
            d.setdefault(k, v)
    black_box = sorted(known_methods(black_box=True))
    known = ["methods", *SANITY_FIELDS, *MAPS_FIELDS, *black_box]
    check_keys(d, known, "saliency", where)
    methods = read_str_list(d.get("methods", SaliencySettings.methods), "saliency.methods", where, known_methods())
    params: dict[str, dict[str, Any]] = {}
    for m in methods:
        if method_info(m).black_box:
            params[m] = resolve_params(m, read_table(d.get(m, {}), f"saliency.{m}", where), where)
    for m in black_box:
        if m in d and m not in methods:
            raise ConfigError(
                f"{where}: saliency.{m} sets parameters of {m!r}, which saliency.methods = "
                f"{list(methods)} does not run; add it to saliency.methods or remove the table"
            )
    own = {k: v for k, v in d.items() if k in SANITY_FIELDS or k in MAPS_FIELDS}
    fields = {**SANITY_FIELDS, **MAPS_FIELDS}
    return from_table(SaliencySettings, own, where, "saliency", fields, methods=methods, params=params)
