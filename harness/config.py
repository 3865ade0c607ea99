"""Profiles as data: load a TOML profile, apply command-line overrides, validate once into frozen dataclasses."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

INITS = ("scratch", "imagenet")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """A profile or override is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Phase:
    """One training phase: which layers train, for how long, with which optimiser."""

    name: str
    epochs: int
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    train_from: str = "all"  # "head" (backbone frozen), "all", or a backbone stage name such as "block4_conv1"


@dataclass(frozen=True)
class AugmentParams:
    """Parameters of the augmentation levels; the level registry decides which of them apply."""

    hflip: bool = True
    vflip: bool = True
    rotation: float = 40.0
    zoom: float = 0.2  # Keras zoom_range: scale drawn from [1 - zoom, 1 + zoom]
    zoom_out: float = 1.0  # extra zoom-out: smallest scale becomes min(1 - zoom, 1 / zoom_out)
    fill: int = 0  # constant fill (0-255) for pixels that affine transforms bring in
    crop_scale: tuple[float, float] = (1.0, 1.0)  # RandomResizedCrop area range; (1, 1) disables it
    erase_p: float = 0.5
    erase_scale: tuple[float, float] = (0.02, 0.4)
    erase_ratio: tuple[float, float] = (0.3, 3.3)
    mixup_alpha: float = 1.0


@dataclass(frozen=True)
class Profile:
    """Everything a run needs to know, recorded verbatim in every run directory."""

    name: str
    backbone: str
    image_size: int
    batch_size: int
    seeds: tuple[int, ...]
    inits: tuple[str, ...]
    levels: tuple[str, ...]
    phases: Mapping[str, tuple[Phase, ...]]
    augment: AugmentParams = field(default_factory=AugmentParams)
    test_sets: tuple[str, ...] = ("test_easy", "test_difficult")
    val_fraction: float = 0.2
    split_seed: int = 42
    oversample: bool = True
    label_smoothing: float = 0.0
    freeze_bn: bool = False
    tta_hflip: bool = False
    hidden: int = 256
    dropout: float = 0.0
    device: str = "auto"
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(f"{i}-{lvl}" for i in self.inits for lvl in self.levels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = {k: [asdict(p) for p in v] for k, v in self.phases.items()}
        d["thresholds"] = copy.deepcopy(dict(self.thresholds))
        return d


def split_variant(variant: str) -> tuple[str, str]:
    """'imagenet-all' -> ('imagenet', 'all'), with a clear error for anything else."""
    init, sep, level = variant.partition("-")
    if not sep or init not in INITS or not level:
        raise ConfigError(f"variant {variant!r} is not '<init>-<level>' with init one of {INITS}")
    return init, level


def builtin_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("harness.profiles").iterdir() if p.name.endswith(".toml"))


def read_profile_toml(name_or_path: str) -> tuple[dict[str, Any], str]:
    """Read a built-in profile by name, or a TOML file by path; returns (raw dict, source description)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"profile file {path} does not exist")
        text, source = path.read_text(encoding="utf-8"), str(path.resolve())
    else:
        res = resources.files("harness.profiles") / f"{name_or_path}.toml"
        if not res.is_file():
            raise ConfigError(
                f"unknown profile {name_or_path!r}: built-in profiles are {builtin_profiles()}, or pass a .toml path"
            )
        text, source = res.read_text(encoding="utf-8"), f"harness/profiles/{name_or_path}.toml"
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.epochs=3' -> (['train', 'epochs'], 3); values are TOML literals, bare words are strings."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key=value (e.g. image_size=96)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a table")
            node = nxt
        node[keys[-1]] = value
    return out


def _check(cond: bool, source: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{source}: {msg}")


def _phase(raw: Mapping[str, Any], source: str, where: str) -> Phase:
    known = set(Phase.__dataclass_fields__)
    unknown = set(raw) - known
    _check(not unknown, source, f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    p = Phase(**raw)
    _check(isinstance(p.epochs, int) and p.epochs >= 0, source, f"{where}.epochs must be an integer >= 0")
    _check(p.optimizer in OPTIMIZERS, source, f"{where}.optimizer {p.optimizer!r} not in {OPTIMIZERS}")
    _check(p.schedule in SCHEDULES, source, f"{where}.schedule {p.schedule!r} not in {SCHEDULES}")
    _check(float(p.lr) > 0, source, f"{where}.lr must be > 0")
    return p


def _pair(v: Any, source: str, where: str) -> tuple[float, float]:
    _check(isinstance(v, (list, tuple)) and len(v) == 2, source, f"{where} must be a pair [low, high]")
    lo, hi = float(v[0]), float(v[1])
    _check(lo <= hi, source, f"{where} low {lo} > high {hi}")
    return lo, hi


def validate(raw: Mapping[str, Any], source: str = "<profile>") -> Profile:
    """Turn a raw profile dict into a Profile, or raise ConfigError naming the field at fault."""
    from harness.augment import LEVELS  # registries live with their modules
    from harness.backbones import BACKBONES

    raw = dict(raw)
    known = set(Profile.__dataclass_fields__)
    unknown = set(raw) - known
    _check(not unknown, source, f"unknown keys {sorted(unknown)} (known: {sorted(known)})")
    for key in ("name", "backbone", "image_size", "batch_size", "seeds", "inits", "levels", "phases"):
        _check(key in raw, source, f"missing required key {key!r}")
    _check(raw["backbone"] in BACKBONES, source, f"backbone {raw['backbone']!r} not in {sorted(BACKBONES)}")
    _check(int(raw["image_size"]) >= 32, source, "image_size must be >= 32")
    _check(int(raw["batch_size"]) >= 2, source, "batch_size must be >= 2 (mixup mixes pairs)")
    seeds = raw["seeds"] if isinstance(raw["seeds"], list) else [raw["seeds"]]
    _check(all(isinstance(s, int) for s in seeds) and seeds, source, "seeds must be a non-empty list of integers")
    for i in raw["inits"]:
        _check(i in INITS, source, f"init {i!r} not in {INITS}")
    for lvl in raw["levels"]:
        _check(lvl in LEVELS, source, f"augmentation level {lvl!r} not in {sorted(LEVELS)}")
    phases: dict[str, tuple[Phase, ...]] = {}
    for init in raw["inits"]:
        plist = raw["phases"].get(init)
        _check(isinstance(plist, list) and plist, source, f"phases.{init} must be a non-empty list of tables")
        phases[init] = tuple(_phase(p, source, f"phases.{init}[{n}]") for n, p in enumerate(plist))
        stages = [name for name, _ in BACKBONES[raw["backbone"]].stages]
        for n, p in enumerate(phases[init]):
            _check(p.train_from in ("head", "all", *stages), source,
                   f"phases.{init}[{n}].train_from {p.train_from!r} is not 'head', 'all' or a {raw['backbone']} stage "
                   f"{stages}; override it, e.g. --set 'phases.{init}=[...]'")
    aug_raw = dict(raw.get("augment", {}))
    unknown = set(aug_raw) - set(AugmentParams.__dataclass_fields__)
    _check(not unknown, source, f"augment: unknown keys {sorted(unknown)}")
    for k in ("crop_scale", "erase_scale", "erase_ratio"):
        if k in aug_raw:
            aug_raw[k] = _pair(aug_raw[k], source, f"augment.{k}")
    aug = AugmentParams(**aug_raw)
    _check(0 <= aug.erase_p <= 1, source, "augment.erase_p must be in [0, 1]")
    _check(aug.zoom_out >= 1, source, "augment.zoom_out must be >= 1")
    _check(0 < aug.crop_scale[0] <= aug.crop_scale[1] <= 1, source, "augment.crop_scale must lie in (0, 1]")
    _check(aug.mixup_alpha > 0, source, "augment.mixup_alpha must be > 0")
    _check(0 < float(raw.get("val_fraction", 0.2)) < 1, source, "val_fraction must be in (0, 1)")
    _check(raw.get("device", "auto") in ("auto", "cpu", "cuda"), source, "device must be auto, cpu or cuda")
    return Profile(
        name=str(raw["name"]),
        backbone=raw["backbone"],
        image_size=int(raw["image_size"]),
        batch_size=int(raw["batch_size"]),
        seeds=tuple(seeds),
        inits=tuple(raw["inits"]),
        levels=tuple(raw["levels"]),
        phases=phases,
        augment=aug,
        test_sets=tuple(raw.get("test_sets", ("test_easy", "test_difficult"))),
        val_fraction=float(raw.get("val_fraction", 0.2)),
        split_seed=int(raw.get("split_seed", 42)),
        oversample=bool(raw.get("oversample", True)),
        label_smoothing=float(raw.get("label_smoothing", 0.0)),
        freeze_bn=bool(raw.get("freeze_bn", False)),
        tta_hflip=bool(raw.get("tta_hflip", False)),
        hidden=int(raw.get("hidden", 256)),
        dropout=float(raw.get("dropout", 0.0)),
        device=raw.get("device", "auto"),
        thresholds=dict(raw.get("thresholds", {})),
        source=source,
    )


def load_profile(name_or_path: str, overrides: Sequence[str] = ()) -> Profile:
    """The edge: read, override, validate. Everything downstream trusts the returned Profile."""
    raw, source = read_profile_toml(name_or_path)
    raw.pop("source", None)
    return validate(apply_overrides(raw, overrides), source + (f" + overrides {list(overrides)}" if overrides else ""))


def profile_from_dict(d: Mapping[str, Any]) -> Profile:
    """Rebuild a Profile recorded in a run directory (config.json)."""
    return validate({k: v for k, v in d.items() if k != "source"}, d.get("source", "<recorded profile>"))
