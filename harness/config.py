"""Profiles as data: load a TOML profile, apply command-line overrides, validate once into frozen dataclasses."""

from __future__ import annotations

import copy
import difflib
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

INITS = ("scratch", "imagenet")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds


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


# --- typed readers: the one validation mechanism for profiles and thresholds ------------------------------------
# Each reads one raw value (from TOML, JSON or a --set override), checks its type and range, and returns it typed,
# or raises ConfigError "<where>: <key> = <value!r> must be <expected>". `key` is dotted (phases.imagenet[1].lr).


def _fail(where: str, key: str, value: Any, expected: str, note: str = "") -> NoReturn:
    raise ConfigError(f"{where}: {key} = {value!r} must be {expected}" + (f" ({note})" if note else ""))


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def _in_range(x: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> bool:
    if lo is not None and (x <= lo if lo_open else x < lo):
        return False
    return not (hi is not None and (x >= hi if hi_open else x > hi))


def _int(value: Any, key: str, where: str, min: int | None = None, max: int | None = None, note: str = "") -> int:
    """An integer (not a bool, not a float, not a string) in [min, max]."""
    if isinstance(value, bool) or not isinstance(value, int) or not _in_range(value, min, max, False, False):
        _fail(where, key, value, "an integer" + _range_text(min, max, False, False), note)
    return value


def _num(
    value: Any,
    key: str,
    where: str,
    min: float | None = None,
    max: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
    note: str = "",
) -> float:
    """A finite number (int or float, not a bool or string) in the range; returned as float."""
    expected = "a number" + _range_text(min, max, min_open, max_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(where, key, value, expected, note)
    try:
        x = float(value)
    except OverflowError:
        _fail(where, key, value, expected, note)
    if not math.isfinite(x) or not _in_range(x, min, max, min_open, max_open):
        _fail(where, key, value, expected, note)
    return x


def _opt_num(
    value: Any,
    key: str,
    where: str,
    min: float | None = None,
    max: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
) -> float | None:
    """Like _num, but None (absent / JSON null) stays None."""
    return None if value is None else _num(value, key, where, min, max, min_open=min_open, max_open=max_open)


def _bool(value: Any, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        _fail(where, key, value, "true or false")
    return value


def _str(value: Any, key: str, where: str, nonempty: bool = True) -> str:
    if not isinstance(value, str) or (nonempty and not value.strip()):
        _fail(where, key, value, "a non-empty string" if nonempty else "a string")
    return value


def _choice(value: Any, key: str, where: str, choices: Sequence[str], note: str = "") -> str:
    if not isinstance(value, str) or value not in choices:
        _fail(where, key, value, f"one of {list(choices)}", note)
    return value


def _no_duplicates(items: Sequence[Any], value: Any, key: str, where: str) -> None:
    dups = sorted({repr(x) for x in items if items.count(x) > 1})
    if dups:
        raise ConfigError(f"{where}: {key} = {value!r} must not repeat entries (repeated: {', '.join(dups)})")


def _str_list(
    value: Any, key: str, where: str, choices: Sequence[str] | None = None, nonempty: bool = True, note: str = ""
) -> tuple[str, ...]:
    """A list of distinct strings; a single string is a one-element list (never split into characters)."""
    if isinstance(value, str):
        items, keys = [value], [key]
    elif isinstance(value, (list, tuple)):
        items, keys = list(value), [f"{key}[{n}]" for n in range(len(value))]
    else:
        _fail(where, key, value, "a string or a list of strings", note)
    if nonempty and not items:
        _fail(where, key, value, "a non-empty list of strings", note)
    for item, k in zip(items, keys):
        if choices is None:
            _str(item, k, where)
        else:
            _choice(item, k, where, choices, note)
    _no_duplicates(items, value, key, where)
    return tuple(items)


def _int_list(
    value: Any, key: str, where: str, min: int | None = None, max: int | None = None, nonempty: bool = True
) -> tuple[int, ...]:
    """A list of distinct integers in [min, max]; a single integer is a one-element list."""
    if isinstance(value, int) and not isinstance(value, bool):
        items, keys = [value], [key]
    elif isinstance(value, (list, tuple)):
        items, keys = list(value), [f"{key}[{n}]" for n in range(len(value))]
    else:
        _fail(where, key, value, "an integer or a list of integers" + _range_text(min, max, False, False))
    if nonempty and not items:
        _fail(where, key, value, "a non-empty list of integers")
    out = tuple(_int(item, k, where, min=min, max=max) for item, k in zip(items, keys))
    _no_duplicates(list(out), value, key, where)
    return out


def _pair(
    value: Any, key: str, where: str, min: float | None = None, max: float | None = None, *, min_open: bool = False
) -> tuple[float, float]:
    """[low, high] with min <= low <= high <= max (min exclusive when min_open)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        _fail(where, key, value, "a pair [low, high]" + _range_text(min, max, min_open, False))
    lo = _num(value[0], f"{key}[0]", where, min, max, min_open=min_open)
    hi = _num(value[1], f"{key}[1]", where, min, max, min_open=min_open)
    if lo > hi:
        _fail(where, key, value, "a pair [low, high] with low <= high")
    return lo, hi


def _table(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        _fail(where, key, value, "a table")
    return dict(value)


def _keys(table: Mapping[str, Any], known: Sequence[str], key: str, where: str, required: Sequence[str] = ()) -> None:
    """Unknown keys and missing required keys of a table are errors naming the table (`key`; '' for top level)."""
    at = f"{key}: " if key else ""
    bad = sorted(str(k) for k in set(table) - set(known))
    if bad:
        raise ConfigError(f"{where}: {at}unknown keys {bad} (known: {sorted(known)})")
    for r in required:
        if r not in table:
            raise ConfigError(f"{where}: {at}missing required key {r!r}")


# --- profile validation -----------------------------------------------------------------------------------------


def _train_from(value: Any, key: str, where: str, backbone: str) -> str:
    """'head', 'all', a named fine-tuning point of the backbone ('upper', ...) or a raw stage name; kept as written."""
    from harness.backbones import get_backbone, train_from_names

    _str(value, key, where)
    b = get_backbone(backbone)
    if value not in train_from_names(backbone):
        points = ", ".join(f"{k} = {v}" for k, v in b.finetune_points.items())
        _fail(
            where,
            key,
            value,
            f"'head', 'all', a named fine-tuning point of {backbone} ({points}) "
            f"or a {backbone} stage {[s for s, _ in b.stages]}",
        )
    return value


def _phase(raw: Any, where: str, key: str, backbone: str) -> Phase:
    d = _table(raw, key, where)
    _keys(d, list(Phase.__dataclass_fields__), key, where, required=("name", "epochs"))
    dflt = Phase(name="", epochs=0)
    return Phase(
        name=_str(d["name"], f"{key}.name", where),
        epochs=_int(d["epochs"], f"{key}.epochs", where, min=0),
        optimizer=_choice(d.get("optimizer", dflt.optimizer), f"{key}.optimizer", where, OPTIMIZERS),
        lr=_num(d.get("lr", dflt.lr), f"{key}.lr", where, min=0, min_open=True),
        weight_decay=_num(d.get("weight_decay", dflt.weight_decay), f"{key}.weight_decay", where, min=0),
        schedule=_choice(d.get("schedule", dflt.schedule), f"{key}.schedule", where, SCHEDULES),
        train_from=_train_from(d.get("train_from", dflt.train_from), f"{key}.train_from", where, backbone),
    )


def _augment(raw: Any, where: str) -> AugmentParams:
    d = _table(raw, "augment", where)
    _keys(d, list(AugmentParams.__dataclass_fields__), "augment", where)
    a = AugmentParams()
    g = lambda k: d.get(k, getattr(a, k))  # noqa: E731
    return AugmentParams(
        hflip=_bool(g("hflip"), "augment.hflip", where),
        vflip=_bool(g("vflip"), "augment.vflip", where),
        rotation=_num(g("rotation"), "augment.rotation", where, 0, 180),
        zoom=_num(g("zoom"), "augment.zoom", where, 0, 1, max_open=True),
        zoom_out=_num(g("zoom_out"), "augment.zoom_out", where, min=1),
        fill=_int(g("fill"), "augment.fill", where, 0, 255),
        crop_scale=_pair(g("crop_scale"), "augment.crop_scale", where, 0, 1, min_open=True),
        erase_p=_num(g("erase_p"), "augment.erase_p", where, 0, 1),
        erase_scale=_pair(g("erase_scale"), "augment.erase_scale", where, 0, 1),
        erase_ratio=_pair(g("erase_ratio"), "augment.erase_ratio", where, 0, min_open=True),
        mixup_alpha=_num(g("mixup_alpha"), "augment.mixup_alpha", where, min=0, min_open=True),
    )


def _test_sets(raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """The named test sets; absent: () (discovered from the dataset at run time); a named empty list is an error."""
    if "test_sets" not in raw:
        return ()
    value = raw["test_sets"]
    if isinstance(value, (list, tuple)) and not value:
        _fail(
            where,
            "test_sets",
            value,
            'a list naming at least one split (e.g. ["test"])',
            "leave test_sets out to discover them from the dataset",
        )
    return _str_list(value, "test_sets", where)


def validate(raw: Mapping[str, Any], source: str = "<profile>") -> Profile:
    """Turn a raw profile dict into a Profile, or raise ConfigError naming the source, the key and the value."""
    from harness.augment import LEVELS  # registries live with their modules
    from harness.backbones import BACKBONES
    from harness.saliency.settings import parse_saliency
    from harness.thresholds import parse_thresholds

    where = source
    raw = _table(raw, "profile", where)
    raw.pop("source", None)  # where it came from is `source`, never a value in the file
    if raw.get("kind") == "check":
        raise ConfigError(
            f'{where}: a profile for `harness check MODEL.onnx` (kind = "check"), not for training; '
            f"harness run takes smoke, cpu, full or a training profile file"
        )
    _keys(
        raw,
        [k for k in Profile.__dataclass_fields__ if k != "source"],
        "",
        where,
        required=("name", "backbone", "image_size", "batch_size", "seeds", "inits", "levels", "phases"),
    )
    dflt = {k: f.default for k, f in Profile.__dataclass_fields__.items() if f.default is not MISSING}
    g = lambda k: raw.get(k, dflt.get(k))  # noqa: E731
    backbone = _choice(raw["backbone"], "backbone", where, sorted(BACKBONES))
    inits = _str_list(raw["inits"], "inits", where, INITS)
    phases_raw = _table(raw["phases"], "phases", where)
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
            _fail(where, f"phases.{init}", plist, "a non-empty list of tables")
        phases[init] = tuple(_phase(p, where, f"phases.{init}[{n}]", backbone) for n, p in enumerate(plist))
    thresholds = _table(raw.get("thresholds", {}), "thresholds", where)
    parse_thresholds(thresholds, where)  # fail at the edge, not after training; the raw table is what is recorded
    return Profile(
        name=_str(raw["name"], "name", where),
        backbone=backbone,
        image_size=_int(raw["image_size"], "image_size", where, min=32),
        batch_size=_int(raw["batch_size"], "batch_size", where, min=2, note="mixup mixes pairs"),
        seeds=_int_list(raw["seeds"], "seeds", where, min=0, max=MAX_SEED),
        inits=inits,
        levels=_str_list(raw["levels"], "levels", where, sorted(LEVELS)),
        phases=phases,
        augment=_augment(raw.get("augment", {}), where),
        test_sets=_test_sets(raw, where),
        val_fraction=_num(g("val_fraction"), "val_fraction", where, 0, 1, min_open=True, max_open=True),
        split_seed=_int(g("split_seed"), "split_seed", where, min=0, max=MAX_SEED),
        oversample=_bool(g("oversample"), "oversample", where),
        label_smoothing=_num(g("label_smoothing"), "label_smoothing", where, 0, 1, max_open=True),
        freeze_bn=_bool(g("freeze_bn"), "freeze_bn", where),
        tta_hflip=_bool(g("tta_hflip"), "tta_hflip", where),
        hidden=_int(g("hidden"), "hidden", where, min=1),
        dropout=_num(g("dropout"), "dropout", where, 0, 1, max_open=True),
        device=_choice(g("device"), "device", where, DEVICES),
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
