"""Profiles as data: load a TOML profile, apply command-line overrides, validate once into frozen dataclasses."""

from __future__ import annotations

import copy
import difflib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from harness.validate import (
    ConfigError,
    check_keys,
    fail,
    read_bool,
    read_choice,
    read_int,
    read_int_list,
    read_num,
    read_pair,
    read_str,
    read_str_list,
    read_table,
)

INITS = ("scratch", "imagenet")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds


@dataclass(frozen=True)
class Phase:
    """One training phase: which layers train, for how long, with which optimiser."""

    name: str
    epochs: int
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    train_from: str = "all"  # "head" (backbone frozen), "all", a named fine-tuning point of the backbone ("top",
    # "upper", "middle": see Backbone.finetune_points) or a raw backbone stage name such as "block4_conv1"


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
    test_sets: tuple[str, ...] = ()  # () = not named: discovered from the dataset at run time (with_test_sets)
    val_fraction: float = 0.2
    split_seed: int = 42
    oversample: bool = True
    label_smoothing: float = 0.0
    freeze_bn: bool = False
    tta_hflip: bool = False
    hidden: int = 256
    dropout: float = 0.0
    device: str = "auto"
    saliency: Any = None  # harness.saliency.settings.SaliencySettings ([saliency]: methods, parameters, sanity)
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(f"{i}-{lvl}" for i in self.inits for lvl in self.levels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = {k: [asdict(p) for p in v] for k, v in self.phases.items()}
        d["thresholds"] = copy.deepcopy(dict(self.thresholds))
        d["saliency"] = self.saliency.to_dict() if self.saliency is not None else None
        if not self.test_sets:
            del d["test_sets"]  # not named: validate() reads an absent key as "discover" (a named [] is an error)
        return d


def split_variant(variant: str) -> tuple[str, str]:
    """'imagenet-all' -> ('imagenet', 'all'), with a clear error for anything else (unknown init or level)."""
    from harness.augment import LEVELS  # lazily: harness.augment imports this module

    if not isinstance(variant, str):
        raise ConfigError(f"variant {variant!r} is not a string '<init>-<level>'")
    init, sep, level = variant.partition("-")
    if not sep or init not in INITS or not level:
        raise ConfigError(f"variant {variant!r} is not '<init>-<level>' with init one of {INITS}")
    if level not in LEVELS:
        close = difflib.get_close_matches(level, list(LEVELS), n=1)
        hint = f"; did you mean '{init}-{close[0]}'?" if close else ""
        raise ConfigError(
            f"variant {variant!r}: unknown augmentation level {level!r}; known levels: {sorted(LEVELS)}{hint}"
        )
    return init, level


def builtin_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("harness.profiles").iterdir() if p.name.endswith(".toml"))


def read_profile_toml(name_or_path: str) -> tuple[dict[str, Any], str]:
    """Read a built-in profile by name, or a TOML file by path; returns (raw dict, source description)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"profile file {path} does not exist")
        source = str(path.resolve())
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read the profile: {exc}") from exc
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


# --- profile validation -----------------------------------------------------------------------------------------


def _train_from(value: Any, key: str, where: str, backbone: str) -> str:
    """'head', 'all', a named fine-tuning point of the backbone ('upper', ...) or a raw stage name; kept as written."""
    from harness.backbones import get_backbone, train_from_names

    read_str(value, key, where)
    b = get_backbone(backbone)
    if value not in train_from_names(backbone):
        points = ", ".join(f"{k} = {v}" for k, v in b.finetune_points.items())
        fail(
            where,
            key,
            value,
            f"'head', 'all', a named fine-tuning point of {backbone} ({points}) "
            f"or a {backbone} stage {[s for s, _ in b.stages]}",
        )
    return value


def _phase(raw: Any, where: str, key: str, backbone: str) -> Phase:
    d = read_table(raw, key, where)
    check_keys(d, list(Phase.__dataclass_fields__), key, where, required=("name", "epochs"))
    dflt = Phase(name="", epochs=0)
    return Phase(
        name=read_str(d["name"], f"{key}.name", where),
        epochs=read_int(d["epochs"], f"{key}.epochs", where, min=0),
        optimizer=read_choice(d.get("optimizer", dflt.optimizer), f"{key}.optimizer", where, OPTIMIZERS),
        lr=read_num(d.get("lr", dflt.lr), f"{key}.lr", where, min=0, min_open=True),
        weight_decay=read_num(d.get("weight_decay", dflt.weight_decay), f"{key}.weight_decay", where, min=0),
        schedule=read_choice(d.get("schedule", dflt.schedule), f"{key}.schedule", where, SCHEDULES),
        train_from=_train_from(d.get("train_from", dflt.train_from), f"{key}.train_from", where, backbone),
    )


def _augment(raw: Any, where: str) -> AugmentParams:
    d = read_table(raw, "augment", where)
    check_keys(d, list(AugmentParams.__dataclass_fields__), "augment", where)
    a = AugmentParams()
    g = lambda k: d.get(k, getattr(a, k))  # noqa: E731
    return AugmentParams(
        hflip=read_bool(g("hflip"), "augment.hflip", where),
        vflip=read_bool(g("vflip"), "augment.vflip", where),
        rotation=read_num(g("rotation"), "augment.rotation", where, 0, 180),
        zoom=read_num(g("zoom"), "augment.zoom", where, 0, 1, max_open=True),
        zoom_out=read_num(g("zoom_out"), "augment.zoom_out", where, min=1),
        fill=read_int(g("fill"), "augment.fill", where, 0, 255),
        crop_scale=read_pair(g("crop_scale"), "augment.crop_scale", where, 0, 1, min_open=True),
        erase_p=read_num(g("erase_p"), "augment.erase_p", where, 0, 1),
        erase_scale=read_pair(g("erase_scale"), "augment.erase_scale", where, 0, 1),
        erase_ratio=read_pair(g("erase_ratio"), "augment.erase_ratio", where, 0, min_open=True),
        mixup_alpha=read_num(g("mixup_alpha"), "augment.mixup_alpha", where, min=0, min_open=True),
    )


def _test_sets(raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """The named test sets; absent: () (discovered from the dataset at run time); a named empty list is an error."""
    if "test_sets" not in raw:
        return ()
    value = raw["test_sets"]
    if isinstance(value, (list, tuple)) and not value:
        fail(
            where,
            "test_sets",
            value,
            'a list naming at least one split (e.g. ["test"])',
            "leave test_sets out to discover them from the dataset",
        )
    return read_str_list(value, "test_sets", where)


def validate(raw: Mapping[str, Any], source: str = "<profile>") -> Profile:
    """Turn a raw profile dict into a Profile, or raise ConfigError naming the source, the key and the value."""
    from harness.augment import LEVELS  # registries live with their modules
    from harness.backbones import BACKBONES
    from harness.saliency.settings import parse_saliency
    from harness.thresholds import parse_thresholds

    where = source
    raw = read_table(raw, "profile", where)
    raw.pop("source", None)  # where it came from is `source`, never a value in the file
    if raw.get("kind") == "check":
        raise ConfigError(
            f'{where}: a profile for `harness check MODEL.onnx` (kind = "check"), not for training; '
            f"harness run takes smoke, cpu, full or a training profile file"
        )
    check_keys(
        raw,
        [k for k in Profile.__dataclass_fields__ if k != "source"],
        "",
        where,
        required=("name", "backbone", "image_size", "batch_size", "seeds", "inits", "levels", "phases"),
    )
    dflt = {k: f.default for k, f in Profile.__dataclass_fields__.items() if f.default is not MISSING}
    g = lambda k: raw.get(k, dflt.get(k))  # noqa: E731
    backbone = read_choice(raw["backbone"], "backbone", where, sorted(BACKBONES))
    inits = read_str_list(raw["inits"], "inits", where, INITS)
    phases_raw = read_table(raw["phases"], "phases", where)
    bad = sorted(str(k) for k in set(phases_raw) - set(INITS))
    if bad:
        raise ConfigError(
            f"{where}: phases: unknown keys {bad} (known: {list(INITS)}); phases are lists of tables "
            f"per init, override a whole list, e.g. --set 'phases.imagenet=[{{name=\"head\", epochs=1}}]'"
        )
    phases: dict[str, tuple[Phase, ...]] = {}
    for init in inits:
        if init not in phases_raw:
            raise ConfigError(f"{where}: phases: missing required key {init!r} (inits lists it)")
        plist = phases_raw[init]
        if not isinstance(plist, list) or not plist:
            fail(where, f"phases.{init}", plist, "a non-empty list of tables")
        phases[init] = tuple(_phase(p, where, f"phases.{init}[{n}]", backbone) for n, p in enumerate(plist))
    thresholds = read_table(raw.get("thresholds", {}), "thresholds", where)
    parse_thresholds(thresholds, where)  # fail at the edge, not after training; the raw table is what is recorded
    return Profile(
        name=read_str(raw["name"], "name", where),
        backbone=backbone,
        image_size=read_int(raw["image_size"], "image_size", where, min=32),
        batch_size=read_int(raw["batch_size"], "batch_size", where, min=2, note="mixup mixes pairs"),
        seeds=read_int_list(raw["seeds"], "seeds", where, min=0, max=MAX_SEED),
        inits=inits,
        levels=read_str_list(raw["levels"], "levels", where, sorted(LEVELS)),
        phases=phases,
        augment=_augment(raw.get("augment", {}), where),
        test_sets=_test_sets(raw, where),
        val_fraction=read_num(g("val_fraction"), "val_fraction", where, 0, 1, min_open=True, max_open=True),
        split_seed=read_int(g("split_seed"), "split_seed", where, min=0, max=MAX_SEED),
        oversample=read_bool(g("oversample"), "oversample", where),
        label_smoothing=read_num(g("label_smoothing"), "label_smoothing", where, 0, 1, max_open=True),
        freeze_bn=read_bool(g("freeze_bn"), "freeze_bn", where),
        tta_hflip=read_bool(g("tta_hflip"), "tta_hflip", where),
        hidden=read_int(g("hidden"), "hidden", where, min=1),
        dropout=read_num(g("dropout"), "dropout", where, 0, 1, max_open=True),
        device=read_choice(g("device"), "device", where, DEVICES),
        saliency=parse_saliency(raw.get("saliency"), where),
        thresholds=thresholds,
        source=source,
    )


def load_profile(name_or_path: str, overrides: Sequence[str] = ()) -> Profile:
    """The edge: read, override, validate. Everything downstream trusts the returned Profile."""
    raw, source = read_profile_toml(name_or_path)
    raw.pop("source", None)
    # the source names the file and says overrides apply; each error names its own key and value, and run.json
    # records the command line, so the list itself would only bury the key at the end of a long message
    return validate(
        apply_overrides(raw, overrides), source + (f" + overrides ({len(overrides)} --set)" if overrides else "")
    )


def with_test_sets(profile: Profile, root: Path) -> Profile:
    """`profile` itself when it names its test sets, else a copy naming the dataset's (harness.data.discover_test_sets:
    every annotations/<split>.json and every <split>/<class>/ folder beside train/; none raises DataError)."""
    import dataclasses

    from harness.data import discover_test_sets  # lazily: harness.data imports torch

    if profile.test_sets:
        return profile
    return dataclasses.replace(profile, test_sets=discover_test_sets(Path(root)))


def profile_from_dict(d: Mapping[str, Any]) -> Profile:
    """Rebuild a Profile recorded in a run directory (config.json)."""
    return validate({k: v for k, v in d.items() if k != "source"}, d.get("source", "<recorded profile>"))
