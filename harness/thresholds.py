"""Business-acceptance thresholds as data: parsed from a profile's [thresholds] table (plus a user file)."""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.backbones import BACKBONES
from harness.baselines.rules import FIELDS as PROBE_FIELDS
from harness.baselines.rules import ProbeRule
from harness.robustness.rules import FIELDS as ROBUSTNESS_FIELDS
from harness.robustness.rules import RobustnessRule
from harness.saliency.registry import METHODS, method_info
from harness.validate import (
    ConfigError,
    Reader,
    check_keys,
    fail,
    from_table,
    read_bool,
    read_choice,
    read_int,
    read_num,
    read_opt_num,
    read_str,
    read_str_list,
    read_table,
    read_toml,
)
from harness.variants import EVERY_MODEL, INITS, gated_by, split_variant


@dataclass(frozen=True)
class AccuracyRule:
    """Per test set. Soft accuracy must reach max(soft_min, best constant answer's soft accuracy + soft_margin),
    and always beat the best constant answer; strict accuracy must beat the constant answer's when asked."""

    soft_min: float = 0.0
    soft_margin: float | None = None
    strict_min: float | None = None
    wilson_lower_min: float | None = None
    strict_above_constant: bool = True
    wilson_above_constant: bool = False  # the Wilson 95% lower bound of soft accuracy above the best constant answer


# The rule of a test set that no [thresholds.accuracy.<split>] names (a dataset's own test sets): above the best
# constant answer by a margin, and the Wilson lower bound above it too. [thresholds.accuracy_default] replaces it.
DEFAULT_ACCURACY_RULE = AccuracyRule(soft_margin=0.1, wilson_above_constant=True)


@dataclass(frozen=True)
class CamRule:
    """Localization criteria of one saliency method over one test set ("" = every test set with regions).

    Energy share must reach max(energy_share_min, chance + energy_share_margin), where chance is the mean expected
    share of a uniform map (the labelled region's area fraction); the pointing rate likewise with the region dilated
    by the pointing tolerance. sanity_max: the maps of the trained model and of the model with its last layer(s)
    randomised must differ (mean Spearman rank correlation <= sanity_max), else the method's verdicts are ERROR.
    """

    split: str = ""
    energy_share_min: float | None = None
    pointing_rate_min: float | None = None
    energy_share_margin: float | None = None
    pointing_margin: float | None = None
    sanity_max: float | None = None

    @property
    def configured(self) -> bool:
        return any(
            v is not None
            for v in (self.energy_share_min, self.pointing_rate_min, self.energy_share_margin, self.pointing_margin)
        )


@dataclass(frozen=True)
class RegressionRule:
    """`harness compare BASELINE NEW`: a gated accuracy (soft or strict, per test set) regresses when it drops by more
    than max_drop, or when it drops and the exact McNemar test on the paired correctness gives p < mcnemar_p (more
    right -> wrong flips than wrong -> right ones, unlikely by chance). None disables that clause. A gated criterion
    that passed in BASELINE and does not pass in NEW is always a regression."""

    max_drop: float | None = 0.05  # one photo in 20
    mcnemar_p: float | None = 0.05


@dataclass(frozen=True)
class SelectiveRule:
    """Selective prediction (answer only when confident): the operating point is the lowest confidence threshold at
    which soft accuracy on the answered images reaches `target`; coverage_at_target_min gates its coverage."""

    target: float = 0.95
    coverage_at_target_min: float | None = None


@dataclass(frozen=True)
class AuditRule:
    """The data audit (harness.audit). A test image is a near copy of a training image when it is an exact copy,
    at least as close to it (frozen-feature cosine similarity) as the near_copy_quantile of the training images are to
    their nearest other training image, or within hash_distance_max bits of it by perceptual hash (mirror included).
    test_independence[<test set>] fails above near_copy_share_max near copies; label_suspects[<set>] above
    label_suspect_share_max suspect labels. `gated`: test sets whose independence gates ("*": every one);
    `labels_gated`: label_suspects gates too; `reason`: why gated or not, shown in the report. Defaults: measured on
    the bundled dataset (docs/audit.md)."""

    near_copy_quantile: float = 0.5
    hash_distance_max: int = 6
    near_copy_share_max: float | None = 0.75
    label_suspect_share_max: float | None = 0.1
    gated: tuple[str, ...] = ()
    labels_gated: bool = False
    reason: str = ""


AUDIT_FIELDS: dict[str, Reader] = {
    "near_copy_quantile": lambda v, k, w: read_num(v, k, w, 0, 1),
    "hash_distance_max": lambda v, k, w: read_int(v, k, w, 0, 64),
    "near_copy_share_max": lambda v, k, w: read_opt_num(v, k, w, 0, 1),
    "label_suspect_share_max": lambda v, k, w: read_opt_num(v, k, w, 0, 1),
    "gated": lambda v, k, w: read_str_list(v, k, w, nonempty=False),
    "labels_gated": read_bool,
    "reason": lambda v, k, w: read_str(v, k, w, nonempty=False),
}


@dataclass(frozen=True)
class Thresholds:
    gated: tuple[str, ...] = ("imagenet-all",)  # variants ('imagenet-all', any backbone) or 'vgg16-imagenet-all'
    seed_aggregate: str = "worst"  # "worst" seed gates, or "mean" over seeds
    accuracy: Mapping[str, AccuracyRule] = field(default_factory=dict)
    accuracy_default: AccuracyRule = DEFAULT_ACCURACY_RULE
    cam: CamRule = field(default_factory=CamRule)  # Grad-CAM (harness-trained models: needs the PyTorch model)
    occlusion: CamRule = field(default_factory=CamRule)  # black-box occlusion through onnxruntime (any ONNX model)
    rise: CamRule = field(default_factory=CamRule)  # black-box RISE
    regression: RegressionRule = field(default_factory=RegressionRule)
    selective: SelectiveRule = field(default_factory=SelectiveRule)
    robustness: RobustnessRule = field(default_factory=RobustnessRule)  # corruptions, object masking, faithfulness
    audit: AuditRule = field(default_factory=AuditRule)  # the data audit: test sets' independence, labels
    probe: ProbeRule = field(default_factory=ProbeRule)  # beats_probe: each model against the linear probe
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

    def localization(self, method: str) -> CamRule:
        """The rule of a saliency method: its registry entry's [thresholds.<key>] ('gradcam' -> [thresholds.cam])."""
        rule: CamRule = getattr(self, method_info(method).thresholds_key)
        return rule


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = (
            _merge(out.get(k, {}), v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else copy.deepcopy(v)
        )
    return out


def gated_entry(entry: str) -> tuple[str | None, str]:
    """'imagenet-all' -> (None, 'imagenet-all'); 'vgg16-imagenet-all' -> ('vgg16', 'imagenet-all').

    Raises ConfigError for anything else (an unknown init, level or backbone).
    """
    if entry == EVERY_MODEL:
        return None, entry
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
    return gated_by(thresholds.gated, backbone, variant)


def _gated(v: Any, key: str, where: str) -> tuple[str, ...]:
    entries = read_str_list(v, key, where, nonempty=False)
    for n, e in enumerate(entries):
        try:
            gated_entry(e)
        except ConfigError as exc:
            fail(
                where,
                key if isinstance(v, str) else f"{key}[{n}]",
                e,
                "'<init>-<level>' (any backbone) or '<backbone>-<init>-<level>'",
                str(exc),
            )
    return entries


def _unit(v: Any, key: str, where: str) -> float | None:
    """An optional fraction: None, or a number in [0, 1]."""
    return read_opt_num(v, key, where, 0, 1)


ACCURACY_FIELDS: dict[str, Reader] = {
    "soft_min": lambda v, k, w: read_num(v, k, w, 0, 1),
    "soft_margin": _unit,
    "strict_min": _unit,
    "wilson_lower_min": _unit,
    "strict_above_constant": read_bool,
    "wilson_above_constant": read_bool,
}
CAM_FIELDS: dict[str, Reader] = {
    "split": lambda v, k, w: read_str(v, k, w, nonempty=False),
    "energy_share_min": _unit,
    "pointing_rate_min": _unit,
    "energy_share_margin": _unit,
    "pointing_margin": _unit,
    "sanity_max": lambda v, k, w: read_opt_num(v, k, w, -1, 1),
}


def _rule(cls: type, fields: Mapping[str, Reader]) -> Reader:
    """A reader of a [thresholds.<key>] table into the rule dataclass `cls`."""
    return lambda v, k, w: from_table(cls, v, w, k, fields)


def _accuracy(value: Any, key: str, where: str) -> dict[str, AccuracyRule]:
    """[thresholds.accuracy]: a rule per named test set."""
    rules = read_table(value, key, where)
    return {
        str(split): from_table(AccuracyRule, rule, where, f"{key}.{split}", ACCURACY_FIELDS)
        for split, rule in rules.items()
    }


# The fields of [thresholds], read in this order.
THRESHOLDS_FIELDS: dict[str, Reader] = {
    "gated": _gated,
    "seed_aggregate": lambda v, k, w: read_choice(v, k, w, ("worst", "mean")),
    "accuracy": _accuracy,
    "accuracy_default": _rule(AccuracyRule, ACCURACY_FIELDS),
    **{m.thresholds_key: _rule(CamRule, CAM_FIELDS) for m in METHODS.values()},
    "regression": _rule(RegressionRule, {"max_drop": _unit, "mcnemar_p": _unit}),
    "selective": _rule(
        SelectiveRule,
        {"target": lambda v, k, w: read_num(v, k, w, 0, 1, min_open=True), "coverage_at_target_min": _unit},
    ),
    "robustness": _rule(RobustnessRule, ROBUSTNESS_FIELDS),
    "audit": _rule(AuditRule, AUDIT_FIELDS),
    "probe": _rule(ProbeRule, PROBE_FIELDS),
    "parity_atol": lambda v, k, w: read_num(v, k, w, min=0, min_open=True),
    "parity_rtol": lambda v, k, w: read_num(v, k, w, min=0),
    "latency_batch": lambda v, k, w: read_int(v, k, w, min=1),
    "latency_max_ms": lambda v, k, w: read_opt_num(v, k, w, min=0, min_open=True),
    "calibration": lambda v, k, w: read_str(v, k, w, nonempty=False),
}


def _read_user_file(path: Path) -> Mapping[str, Any]:
    user = read_toml(path, "thresholds")
    if "thresholds" in user:
        if not isinstance(user["thresholds"], Mapping):
            fail(str(path), "thresholds", user["thresholds"], "a table ([thresholds] or thresholds.KEY = VALUE)")
        return user["thresholds"]
    return user


def parse_thresholds(raw: Mapping[str, Any], source: str, user_file: Path | None = None) -> Thresholds:
    """Validate the profile's thresholds, overridden key by key by a user TOML file ([thresholds] table or top level).

    Every value is type- and range-checked; errors are ConfigError naming the source, the dotted key and the value.
    """
    merged = read_table(raw, "thresholds", source)
    if user_file is not None:
        path = Path(user_file)
        merged = _merge(merged, _read_user_file(path))
        source = f"{source} + {path}"
    check_keys(merged, [f.name for f in dataclasses.fields(Thresholds)], "thresholds", source)
    read_table(merged.get("accuracy", {}), "thresholds.accuracy", source)  # a table, before any value is read
    return from_table(Thresholds, merged, source, "thresholds", THRESHOLDS_FIELDS, source=source)


def _closest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_applies(
    thresholds: Thresholds, test_sets: Sequence[str], variants: Sequence[str], where: str, backbones: Sequence[str] = ()
) -> None:
    """Raise ConfigError when the thresholds name something this run does not have, so that no criterion is
    silently skipped: a thresholds.accuracy.<name> that is not one of `test_sets`, a thresholds.cam.split that is
    not one of them (when a CAM criterion is set), or a gated entry whose variant is not in the matrix `variants`
    (plain '<init>-<level>' names). A backbone-qualified gated entry ('vgg16-imagenet-all') must also name one of
    `backbones` (when given)."""
    test_sets, variants, backbones = list(test_sets), list(variants), list(backbones)
    for name in thresholds.accuracy:
        if name not in test_sets:
            raise ConfigError(
                f"{where}: thresholds.accuracy.{name} names test set {name!r}, which this run does not "
                f"have (test sets: {test_sets}){_closest(name, test_sets)}"
            )
    for method in METHODS.values():
        key, rule = method.thresholds_key, thresholds.localization(method.name)
        if rule.configured and rule.split and rule.split not in test_sets:
            raise ConfigError(
                f"{where}: thresholds.{key}.split = {rule.split!r} is not a test set of this run "
                f"(test sets: {test_sets}){_closest(rule.split, test_sets)}"
            )
    for n, name in enumerate(thresholds.audit.gated):
        if name != EVERY_MODEL and name not in test_sets:
            raise ConfigError(
                f"{where}: thresholds.audit.gated[{n}] = {name!r} is not a test set of this run "
                f"(test sets: {test_sets}){_closest(name, test_sets)}"
            )
    for n, entry in enumerate(thresholds.gated):
        backbone, variant = gated_entry(entry)
        if entry == EVERY_MODEL:
            continue
        if variant not in variants:
            raise ConfigError(
                f"{where}: thresholds.gated[{n}] = {entry!r} gates variant {variant!r}, which is not in "
                f"this run's matrix {variants}{_closest(variant, variants)}; add it to --variants or "
                f"change thresholds.gated"
            )
        if backbone is not None and backbones and backbone not in backbones:
            raise ConfigError(
                f"{where}: thresholds.gated[{n}] = {entry!r} gates backbone {backbone!r}, but this run's "
                f"backbones are {backbones}; use --backbone "
                f"{backbone} or change thresholds.gated (e.g. to {variant!r}, any backbone)"
            )


def fit_to_run(thresholds: Thresholds, test_sets: Sequence[str]) -> tuple[Thresholds, list[str]]:
    """The thresholds of a profile applied to a dataset whose test sets were discovered (not named by the profile):
    a named accuracy rule for a test set this dataset does not have is dropped (its test sets get the default rule),
    and a localization rule naming an absent test set applies to every test set with regions instead. Returns the
    fitted thresholds and one note per change (recorded in run.json and shown in the report)."""
    test_sets = list(test_sets)
    notes: list[str] = []
    dropped = [name for name in thresholds.accuracy if name not in test_sets]
    if dropped:
        notes.append(
            f"thresholds.accuracy.{{{', '.join(dropped)}}} not applied: this dataset's test sets are "
            f"{test_sets} (each gets the default rule)"
        )
    changes: dict[str, Any] = {"accuracy": {k: v for k, v in thresholds.accuracy.items() if k in test_sets}}
    for method in METHODS.values():
        key, rule = method.thresholds_key, thresholds.localization(method.name)
        if rule.split and rule.split not in test_sets:
            changes[key] = dataclasses.replace(rule, split="")
            if rule.configured:
                notes.append(
                    f"thresholds.{key}.split = {rule.split!r} is not a test set of this dataset: "
                    f"localization is judged on every test set with labelled regions"
                )
    absent = [name for name in thresholds.audit.gated if name != EVERY_MODEL and name not in test_sets]
    if absent:
        kept = tuple(name for name in thresholds.audit.gated if name not in absent)
        changes["audit"] = dataclasses.replace(thresholds.audit, gated=kept, reason="")
        notes.append(
            f"thresholds.audit.gated {absent} not applied: this dataset's test sets are {test_sets} (their "
            f"test_independence is reported, not gated, unless a --thresholds file gates it)"
        )
    return dataclasses.replace(thresholds, **changes), notes


def check_user_file(user_file: Path | None, test_sets: Sequence[str]) -> None:
    """A user's own thresholds file is never fitted to the dataset (fit_to_run sets aside only the profile's rules):
    a [thresholds.accuracy.<name>] or a localization `split` in it naming a test set this run does not have is a
    ConfigError naming the file, as check_applies says of it in `harness report`."""
    if user_file is None:
        return
    where, test_sets = str(user_file), list(test_sets)
    own = parse_thresholds({}, where, Path(user_file))  # the file alone: a split it does not set is ""
    for name in own.accuracy:
        if name not in test_sets:
            raise ConfigError(
                f"{where}: thresholds.accuracy.{name} names test set {name!r}, which this run does not "
                f"have (test sets: {test_sets}){_closest(name, test_sets)}"
            )
    for method in METHODS.values():
        key, rule = method.thresholds_key, own.localization(method.name)
        if rule.split and rule.split not in test_sets:
            raise ConfigError(
                f"{where}: thresholds.{key}.split = {rule.split!r} is not a test set of this run "
                f"(test sets: {test_sets}){_closest(rule.split, test_sets)}"
            )
    for n, name in enumerate(own.audit.gated):
        if name != EVERY_MODEL and name not in test_sets:
            raise ConfigError(
                f"{where}: thresholds.audit.gated[{n}] = {name!r} is not a test set of this run "
                f"(test sets: {test_sets}){_closest(name, test_sets)}"
            )
