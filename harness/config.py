"""Profiles as data: load a TOML profile, apply command-line overrides, validate once into frozen dataclasses."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from harness.augment import LEVELS, AugmentParams
from harness.backbones import BACKBONES, get_backbone, train_from_names
from harness.data import discover_test_sets
from harness.precision import PRECISIONS
from harness.robustness.settings import RobustnessSettings, parse_robustness
from harness.saliency.settings import SaliencySettings, parse_saliency
from harness.thresholds import parse_thresholds
from harness.validate import (
    ConfigError,
    Reader,
    check_keys,
    fail,
    from_table,
    parse_toml,
    read_bool,
    read_choice,
    read_int,
    read_int_list,
    read_num,
    read_pair,
    read_str,
    read_str_list,
    read_table,
    read_toml,
)
from harness.variants import INITS

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd", "probe")  # probe: the head fitted as a linear probe (probe_head)
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
    precision: str = "auto"  # training: "auto" | "fp32" | "bf16" autocast (harness.precision); export stays fp32
    # WiSE-FT (Wortsman et al., CVPR 2022): after a probe phase and fine-tuning, the weights become
    # (1 - a) * fine-tuned + a * probed; 0: the fine-tuned weights as they are. Inits whose phases do not start with a
    # probe ignore it (so overriding the phases of a profile that sets it needs no second override)
    probe_interpolation: float = 0.0
    saliency: SaliencySettings = field(default_factory=SaliencySettings)  # [saliency]: methods, parameters, sanity
    robustness: RobustnessSettings = field(default_factory=RobustnessSettings)  # [robustness]: corruptions, masking
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(f"{i}-{lvl}" for i in self.inits for lvl in self.levels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = {k: [asdict(p) for p in v] for k, v in self.phases.items()}
        d["thresholds"] = copy.deepcopy(dict(self.thresholds))
        d["saliency"] = self.saliency.to_dict()
        d["robustness"] = self.robustness.to_dict()
        if not self.test_sets:
            del d["test_sets"]  # not named: validate() reads an absent key as "discover" (a named [] is an error)
        return d


def builtin_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("harness.profiles").iterdir() if p.name.endswith(".toml"))


def read_profile_toml(name_or_path: str) -> tuple[dict[str, Any], str]:
    """Read a built-in profile by name, or a TOML file by path; returns (raw dict, source description)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        source = str(path.resolve())
        return read_toml(path, "profile", where=source, unreadable="the profile"), source
    res = resources.files("harness.profiles") / f"{name_or_path}.toml"
    if not res.is_file():
        raise ConfigError(
            f"unknown profile {name_or_path!r}: built-in profiles are {builtin_profiles()}, or pass a .toml path"
        )
    source = f"harness/profiles/{name_or_path}.toml"
    return parse_toml(res.read_text(encoding="utf-8"), source), source


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


def _train_from(backbone: str) -> Reader:
    """A reader of train_from: 'head', 'all', a named fine-tuning point of the backbone ('upper', ...) or a raw stage
    name; kept as written."""

    def read(value: Any, key: str, where: str) -> str:
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

    return read


def _phase(raw: Any, where: str, key: str, backbone: str) -> Phase:
    fields: dict[str, Reader] = {
        "name": read_str,
        "epochs": lambda v, k, w: read_int(v, k, w, min=0),
        "optimizer": lambda v, k, w: read_choice(v, k, w, OPTIMIZERS),
        "lr": lambda v, k, w: read_num(v, k, w, min=0, min_open=True),
        "weight_decay": lambda v, k, w: read_num(v, k, w, min=0),
        "schedule": lambda v, k, w: read_choice(v, k, w, SCHEDULES),
        "train_from": _train_from(backbone),
    }
    return from_table(Phase, raw, where, key, fields, required=("name", "epochs"))


AUGMENT_FIELDS: dict[str, Reader] = {
    "hflip": read_bool,
    "vflip": read_bool,
    "rotation": lambda v, k, w: read_num(v, k, w, 0, 180),
    "zoom": lambda v, k, w: read_num(v, k, w, 0, 1, max_open=True),
    "zoom_out": lambda v, k, w: read_num(v, k, w, min=1),
    "fill": lambda v, k, w: read_int(v, k, w, 0, 255),
    "crop_scale": lambda v, k, w: read_pair(v, k, w, 0, 1, min_open=True),
    "erase_p": lambda v, k, w: read_num(v, k, w, 0, 1),
    "erase_scale": lambda v, k, w: read_pair(v, k, w, 0, 1),
    "erase_ratio": lambda v, k, w: read_pair(v, k, w, 0, min_open=True),
    "mixup_alpha": lambda v, k, w: read_num(v, k, w, min=0, min_open=True),
}


def _test_sets(value: Any, key: str, where: str) -> tuple[str, ...]:
    """The named test sets (absent: () -- discovered from the dataset at run time); a named empty list is an error."""
    if isinstance(value, (list, tuple)) and not value:
        fail(
            where,
            key,
            value,
            'a list naming at least one split (e.g. ["test"])',
            "leave test_sets out to discover them from the dataset",
        )
    return read_str_list(value, key, where)


# The profile's own fields, read in this order (backbone, inits, phases and thresholds are read first, by validate).
PROFILE_FIELDS: dict[str, Reader] = {
    "name": read_str,
    "image_size": lambda v, k, w: read_int(v, k, w, min=32),
    "batch_size": lambda v, k, w: read_int(v, k, w, min=2, note="mixup mixes pairs"),
    "seeds": lambda v, k, w: read_int_list(v, k, w, min=0, max=MAX_SEED),
    "levels": lambda v, k, w: read_str_list(v, k, w, sorted(LEVELS)),
    "augment": lambda v, k, w: from_table(AugmentParams, v, w, k, AUGMENT_FIELDS),
    "test_sets": _test_sets,
    "val_fraction": lambda v, k, w: read_num(v, k, w, 0, 1, min_open=True, max_open=True),
    "split_seed": lambda v, k, w: read_int(v, k, w, min=0, max=MAX_SEED),
    "oversample": read_bool,
    "label_smoothing": lambda v, k, w: read_num(v, k, w, 0, 1, max_open=True),
    "freeze_bn": read_bool,
    "tta_hflip": read_bool,
    "hidden": lambda v, k, w: read_int(v, k, w, min=0, note="0: a single linear layer on the pooled features"),
    "dropout": lambda v, k, w: read_num(v, k, w, 0, 1, max_open=True),
    "device": lambda v, k, w: read_choice(v, k, w, DEVICES),
    "precision": lambda v, k, w: read_choice(v, k, w, PRECISIONS, "auto: bf16 autocast only where it is fast"),
    "probe_interpolation": lambda v, k, w: read_num(v, k, w, 0, 1, max_open=True),
    "saliency": lambda v, k, w: parse_saliency(v, w),
    "robustness": lambda v, k, w: parse_robustness(v, w),
}
REQUIRED = ("name", "backbone", "image_size", "batch_size", "seeds", "inits", "levels", "phases")


def validate(raw: Mapping[str, Any], source: str = "<profile>") -> Profile:
    """Turn a raw profile dict into a Profile, or raise ConfigError naming the source, the key and the value."""
    where = source
    raw = read_table(raw, "profile", where)
    raw.pop("source", None)  # where it came from is `source`, never a value in the file
    if raw.get("kind") == "check":
        raise ConfigError(
            f'{where}: a profile for `harness check MODEL.onnx` (kind = "check"), not for training; '
            f"harness run takes smoke, cpu, full or a training profile file"
        )
    known = [f.name for f in dataclasses.fields(Profile) if f.name != "source"]
    check_keys(raw, known, "", where, required=REQUIRED)
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
    own = {k: v for k, v in raw.items() if k not in ("backbone", "inits", "phases", "thresholds")}
    profile = from_table(
        Profile,
        own,
        where,
        "",
        PROFILE_FIELDS,
        known=known,
        backbone=backbone,
        inits=inits,
        phases=phases,
        thresholds=thresholds,
        source=source,
    )
    _check_probe_phases(profile, where)
    return profile


def _check_probe_phases(profile: Profile, where: str) -> None:
    """A phase with optimizer = "probe" fits the head as a linear probe on the frozen backbone (LP-FT's first step):
    it needs a linear head (hidden = 0), train_from = "head", one pass (epochs 1, or 0 to skip it), and comes first."""
    for init, plist in profile.phases.items():
        for n, phase in enumerate(plist):
            if phase.optimizer != "probe":
                continue
            key = f"phases.{init}[{n}]"
            if profile.hidden != 0:
                fail(
                    where,
                    "hidden",
                    profile.hidden,
                    "0",
                    f"{key}.optimizer = 'probe' writes a linear probe's solution into the head, which needs a single "
                    f"linear layer on the pooled features (hidden = 0)",
                )
            if phase.train_from != "head":
                fail(where, f"{key}.train_from", phase.train_from, "'head'", "a probe is fitted on the frozen backbone")
            if phase.epochs > 1:
                fail(where, f"{key}.epochs", phase.epochs, "1 (or 0 to skip the phase)", "a probe is fitted in one go")
            if n != 0:
                fail(
                    where,
                    f"{key}.optimizer",
                    phase.optimizer,
                    "another optimizer",
                    "the probe phase must come first: it replaces the head's weights",
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
    if profile.test_sets:
        return profile
    return dataclasses.replace(profile, test_sets=discover_test_sets(Path(root)))


def profile_from_dict(d: Mapping[str, Any]) -> Profile:
    """Rebuild a Profile recorded in a run directory (config.json)."""
    return validate({k: v for k, v in d.items() if k != "source"}, d.get("source", "<recorded profile>"))
