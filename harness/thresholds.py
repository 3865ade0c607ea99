"""Business-acceptance thresholds as data: parsed from a profile's [thresholds] table (plus a user file)."""

from __future__ import annotations

import copy
import difflib
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.config import (ConfigError, _bool, _choice, _fail, _int, _keys, _num, _opt_num, _str, _str_list, _table,
                            split_variant)


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
    gated: tuple[str, ...] = ("imagenet-all",)  # variants ('imagenet-all', any backbone) or 'vgg16-imagenet-all'
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


def _unit(v: Any, key: str, where: str) -> float | None:
    """An optional fraction: None, or a number in [0, 1]."""
    return _opt_num(v, key, where, 0, 1)


def gated_entry(entry: str) -> tuple[str | None, str]:
    """'imagenet-all' -> (None, 'imagenet-all'); 'vgg16-imagenet-all' -> ('vgg16', 'imagenet-all').

    Raises ConfigError for anything else (an unknown init, level or backbone).
    """
    from harness.backbones import BACKBONES
    from harness.config import INITS

    first, sep, rest = entry.partition("-")
    if first in INITS:
        split_variant(entry)
        return None, entry
    if sep and first in BACKBONES:
        split_variant(rest)
        return first, rest
    raise ConfigError(f"{entry!r} starts with neither an init {INITS} nor a backbone {sorted(BACKBONES)}")


def is_gated(thresholds: Thresholds, backbone: str, variant: str) -> bool:
    """Whether `variant` ('imagenet-all') of `backbone` is gated: an entry 'imagenet-all' or 'vgg16-imagenet-all'."""
    return variant in thresholds.gated or f"{backbone}-{variant}" in thresholds.gated


def _gated(v: Any, where: str) -> tuple[str, ...]:
    entries = _str_list(v, "thresholds.gated", where, nonempty=False)
    for n, e in enumerate(entries):
        key = "thresholds.gated" if isinstance(v, str) else f"thresholds.gated[{n}]"
        try:
            gated_entry(e)
        except ConfigError as exc:
            _fail(where, key, e, "'<init>-<level>' (any backbone) or '<backbone>-<init>-<level>'", str(exc))
    return entries


def _accuracy_rule(raw: Any, split: str, where: str) -> AccuracyRule:
    key = f"thresholds.accuracy.{split}"
    d = _table(raw, key, where)
    _keys(d, list(AccuracyRule.__dataclass_fields__), key, where)
    a = AccuracyRule()
    g = lambda k: d.get(k, getattr(a, k))  # noqa: E731
    return AccuracyRule(
        soft_min=_num(g("soft_min"), f"{key}.soft_min", where, 0, 1),
        soft_margin=_unit(g("soft_margin"), f"{key}.soft_margin", where),
        strict_min=_unit(g("strict_min"), f"{key}.strict_min", where),
        wilson_lower_min=_unit(g("wilson_lower_min"), f"{key}.wilson_lower_min", where),
        strict_above_constant=_bool(g("strict_above_constant"), f"{key}.strict_above_constant", where),
    )


def _cam_rule(raw: Any, where: str) -> CamRule:
    d = _table(raw, "thresholds.cam", where)
    _keys(d, list(CamRule.__dataclass_fields__), "thresholds.cam", where)
    c = CamRule()
    g = lambda k: d.get(k, getattr(c, k))  # noqa: E731
    return CamRule(
        split=_str(g("split"), "thresholds.cam.split", where),
        energy_share_min=_unit(g("energy_share_min"), "thresholds.cam.energy_share_min", where),
        pointing_rate_min=_unit(g("pointing_rate_min"), "thresholds.cam.pointing_rate_min", where),
    )


def _read_user_file(path: Path) -> Mapping[str, Any]:
    try:
        user = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"thresholds file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the thresholds file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    if "thresholds" in user:
        if not isinstance(user["thresholds"], Mapping):
            _fail(str(path), "thresholds", user["thresholds"], "a table ([thresholds] or thresholds.KEY = VALUE)")
        return user["thresholds"]
    return user


def parse_thresholds(raw: Mapping[str, Any], source: str, user_file: Path | None = None) -> Thresholds:
    """Validate the profile's thresholds, overridden key by key by a user TOML file ([thresholds] table or top level).

    Every value is type- and range-checked; errors are ConfigError naming the source, the dotted key and the value.
    """
    merged = _table(raw, "thresholds", source)
    if user_file is not None:
        path = Path(user_file)
        merged = _merge(merged, _read_user_file(path))
        source = f"{source} + {path}"
    where, d = source, merged
    _keys(d, list(Thresholds.__dataclass_fields__), "thresholds", where)
    t = Thresholds()
    g = lambda k: d.get(k, getattr(t, k))  # noqa: E731
    acc_raw = _table(d.get("accuracy", {}), "thresholds.accuracy", where)
    return Thresholds(
        gated=_gated(g("gated"), where),
        seed_aggregate=_choice(g("seed_aggregate"), "thresholds.seed_aggregate", where, ("worst", "mean")),
        accuracy={str(split): _accuracy_rule(rule, str(split), where) for split, rule in acc_raw.items()},
        cam=_cam_rule(d.get("cam", {}), where),
        parity_atol=_num(g("parity_atol"), "thresholds.parity_atol", where, min=0, min_open=True),
        parity_rtol=_num(g("parity_rtol"), "thresholds.parity_rtol", where, min=0),
        latency_batch=_int(g("latency_batch"), "thresholds.latency_batch", where, min=1),
        latency_max_ms=_opt_num(g("latency_max_ms"), "thresholds.latency_max_ms", where, min=0, min_open=True),
        calibration=_str(g("calibration"), "thresholds.calibration", where, nonempty=False),
        source=source,
    )


def _closest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_applies(thresholds: Thresholds, test_sets: Sequence[str], variants: Sequence[str], where: str,
                  backbones: Sequence[str] = ()) -> None:
    """Raise ConfigError when the thresholds name something this run does not have, so that no criterion is
    silently skipped: a thresholds.accuracy.<name> that is not one of `test_sets`, a thresholds.cam.split that is
    not one of them (when a CAM criterion is set), or a gated entry whose variant is not in the matrix `variants`
    (plain '<init>-<level>' names). A backbone-qualified gated entry ('vgg16-imagenet-all') must also name one of
    `backbones` (when given)."""
    test_sets, variants, backbones = list(test_sets), list(variants), list(backbones)
    for name in thresholds.accuracy:
        if name not in test_sets:
            raise ConfigError(f"{where}: thresholds.accuracy.{name} names test set {name!r}, which this run does not "
                              f"have (test sets: {test_sets}){_closest(name, test_sets)}")
    cam = thresholds.cam
    if (cam.energy_share_min is not None or cam.pointing_rate_min is not None) and cam.split not in test_sets:
        raise ConfigError(f"{where}: thresholds.cam.split = {cam.split!r} is not a test set of this run "
                          f"(test sets: {test_sets}){_closest(cam.split, test_sets)}")
    for n, entry in enumerate(thresholds.gated):
        backbone, variant = gated_entry(entry)
        if variant not in variants:
            raise ConfigError(f"{where}: thresholds.gated[{n}] = {entry!r} gates variant {variant!r}, which is not in "
                              f"this run's matrix {variants}{_closest(variant, variants)}; add it to --variants or "
                              f"change thresholds.gated")
        if backbone is not None and backbones and backbone not in backbones:
            raise ConfigError(f"{where}: thresholds.gated[{n}] = {entry!r} gates backbone {backbone!r}, but this run's "
                              f"backbones are {backbones}; use --backbone "
                              f"{backbone} or change thresholds.gated (e.g. to {variant!r}, any backbone)")
