"""Business-acceptance thresholds as data: parsed from a profile's [thresholds] table (plus a user file)."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.config import ConfigError


@dataclass(frozen=True)
class AccuracyRule:
    """Per test set. Soft accuracy must reach max(soft_min, best constant answer's soft accuracy + soft_margin),
    and always beat the best constant answer; strict accuracy must beat the constant answer's when asked."""

    soft_min: float = 0.0
    soft_margin: float | None = None
    strict_min: float | None = None
    wilson_lower_min: float | None = None
    strict_above_constant: bool = True


@dataclass(frozen=True)
class CamRule:
    split: str = "test_difficult"
    energy_share_min: float | None = None
    pointing_rate_min: float | None = None


@dataclass(frozen=True)
class Thresholds:
    gated: tuple[str, ...] = ("imagenet-all",)
    seed_aggregate: str = "worst"  # "worst" seed gates, or "mean" over seeds
    accuracy: Mapping[str, AccuracyRule] = field(default_factory=dict)
    cam: CamRule = field(default_factory=CamRule)
    parity_atol: float = 1e-4
    parity_rtol: float = 1e-3
    latency_batch: int = 1
    latency_max_ms: float | None = None
    calibration: str = ""  # where the numbers come from (measurements), shown in every report
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accuracy"] = {k: asdict(v) for k, v in self.accuracy.items()}
        return d


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _fields(cls, raw: Mapping[str, Any], where: str, source: str) -> dict[str, Any]:
    unknown = set(raw) - set(cls.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{source}: {where}: unknown keys {sorted(unknown)} (known: {sorted(cls.__dataclass_fields__)})")
    return dict(raw)


def _unit(v: Any, where: str, source: str) -> None:
    if v is not None and not (isinstance(v, (int, float)) and 0 <= v <= 1):
        raise ConfigError(f"{source}: {where} = {v!r} must be a number in [0, 1]")


def parse_thresholds(raw: Mapping[str, Any], source: str, user_file: Path | None = None) -> Thresholds:
    """Validate the profile's thresholds, overridden key by key by a user TOML file ([thresholds] table or top level)."""
    merged = dict(raw)
    if user_file is not None:
        path = Path(user_file)
        try:
            user = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"thresholds file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
        merged = _merge(merged, user.get("thresholds", user))
        source = f"{source} + {path}"
    d = _fields(Thresholds, merged, "thresholds", source)
    accuracy = {}
    for split, rule in d.pop("accuracy", {}).items():
        r = AccuracyRule(**_fields(AccuracyRule, rule, f"thresholds.accuracy.{split}", source))
        for name in ("soft_min", "soft_margin", "strict_min", "wilson_lower_min"):
            _unit(getattr(r, name), f"thresholds.accuracy.{split}.{name}", source)
        accuracy[split] = r
    cam = CamRule(**_fields(CamRule, d.pop("cam", {}), "thresholds.cam", source))
    _unit(cam.energy_share_min, "thresholds.cam.energy_share_min", source)
    _unit(cam.pointing_rate_min, "thresholds.cam.pointing_rate_min", source)
    t = Thresholds(accuracy=accuracy, cam=cam, source=source,
                   **{k: (tuple(v) if k == "gated" else v) for k, v in d.items() if k != "source"})
    if t.seed_aggregate not in ("worst", "mean"):
        raise ConfigError(f"{source}: thresholds.seed_aggregate must be 'worst' or 'mean', not {t.seed_aggregate!r}")
    if t.parity_atol <= 0 or t.parity_rtol < 0:
        raise ConfigError(f"{source}: thresholds.parity_atol must be > 0 and parity_rtol >= 0")
    return t
