"""The [saliency] table of a profile: which saliency methods a run computes, their parameters, the sanity check.

```toml
[saliency]
methods = ["gradcam", "occlusion"]   # gradcam needs the PyTorch model (harness run); the others run on any ONNX
sanity = true                        # Adebayo et al. 2018: maps of the model with its last layer(s) randomised
sanity_layers = 1
sanity_images = 20                   # at most this many scored images per method (the sweep is repeated for each)
[saliency.occlusion]                 # overrides of the method's defaults (harness.saliency.METHODS)
window = 32
stride = 16
```
Validated once, at the edge, with ConfigError naming the key and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.validate import ConfigError, check_keys, read_bool, read_int, read_str_list, read_table

GRADCAM = "gradcam"


@dataclass(frozen=True)
class SaliencySettings:
    methods: tuple[str, ...] = (GRADCAM,)
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # method -> its resolved parameters
    sanity: bool = True
    sanity_layers: int = 1
    sanity_seed: int = 0
    sanity_images: int = 20

    @property
    def black_box(self) -> tuple[str, ...]:
        """The methods that run through onnxruntime (every one but Grad-CAM)."""
        return tuple(m for m in self.methods if m != GRADCAM)

    def sanity_inputs(self) -> dict[str, Any] | None:
        """What a sanity check is made from (recorded in each saliency evidence file's inputs); None when off."""
        if not self.sanity:
            return None
        return {"layers": self.sanity_layers, "seed": self.sanity_seed, "images": self.sanity_images}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = {k: dict(v) for k, v in self.params.items()}
        return d


def known_methods() -> list[str]:
    from harness.saliency import METHODS

    return [GRADCAM, *sorted(METHODS)]


def parse_saliency(raw: Any, where: str) -> SaliencySettings:
    """Validate a [saliency] table (or SaliencySettings.to_dict() output, as recorded in a run)."""
    from harness.saliency import METHODS, resolve_params

    d = read_table(raw if raw is not None else {}, "saliency", where)
    d = dict(d)
    recorded = d.pop("params", None)  # to_dict() form: {"params": {"occlusion": {...}}}
    if recorded is not None:
        for k, v in read_table(recorded, "saliency.params", where).items():
            d.setdefault(k, v)
    known = ["methods", "sanity", "sanity_layers", "sanity_seed", "sanity_images", *sorted(METHODS)]
    check_keys(d, known, "saliency", where)
    dflt = SaliencySettings()
    methods = read_str_list(d.get("methods", dflt.methods), "saliency.methods", where, known_methods())
    params: dict[str, dict[str, Any]] = {}
    for m in methods:
        if m == GRADCAM:
            continue
        given = read_table(d.get(m, {}), f"saliency.{m}", where)
        params[m] = resolve_params(m, given, where)
    for m in sorted(METHODS):
        if m in d and m not in methods:
            raise ConfigError(
                f"{where}: saliency.{m} sets parameters of {m!r}, which saliency.methods = "
                f"{list(methods)} does not run; add it to saliency.methods or remove the table"
            )
    return SaliencySettings(
        methods=methods,
        params=params,
        sanity=read_bool(d.get("sanity", dflt.sanity), "saliency.sanity", where),
        sanity_layers=read_int(
            d.get("sanity_layers", dflt.sanity_layers), "saliency.sanity_layers", where, min=1, max=8
        ),
        sanity_seed=read_int(
            d.get("sanity_seed", dflt.sanity_seed), "saliency.sanity_seed", where, min=0, max=2**32 - 1
        ),
        sanity_images=read_int(d.get("sanity_images", dflt.sanity_images), "saliency.sanity_images", where, min=1),
    )
