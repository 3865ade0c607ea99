"""Business-acceptance thresholds as data: parsed from a profile's [thresholds] table (plus a user file)."""

from __future__ import annotations

import copy
import difflib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config import split_variant
from harness.validate import (
    ConfigError,
    check_keys,
    fail,
    read_bool,
    read_choice,
    read_int,
    read_num,
    read_opt_num,
    read_str,
    read_str_list,
    read_table,
)


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
        """The rule of a saliency method: 'gradcam' -> [thresholds.cam], 'occlusion', 'rise'."""
        return {"gradcam": self.cam, "occlusion": self.occlusion, "rise": self.rise}[method]


# saliency method -> its [thresholds.<key>] table, evidence file <prefix>.json and criterion prefix
SALIENCY_EVIDENCE = {"gradcam": "cam", "occlusion": "occlusion", "rise": "rise"}
EVERY_MODEL = "*"  # thresholds.gated = ["*"]: every model of the run is gated (harness check)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = (
            _merge(out.get(k, {}), v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else copy.deepcopy(v)
        )
    return out


def _unit(v: Any, key: str, where: str) -> float | None:
    """An optional fraction: None, or a number in [0, 1]."""
    return read_opt_num(v, key, where, 0, 1)


def gated_entry(entry: str) -> tuple[str | None, str]:
    """'imagenet-all' -> (None, 'imagenet-all'); 'vgg16-imagenet-all' -> ('vgg16', 'imagenet-all').

    Raises ConfigError for anything else (an unknown init, level or backbone).
    """
    from harness.backbones import BACKBONES
    from harness.config import INITS

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
    return EVERY_MODEL in thresholds.gated or variant in thresholds.gated or f"{backbone}-{variant}" in thresholds.gated


def _gated(v: Any, where: str) -> tuple[str, ...]:
    entries = read_str_list(v, "thresholds.gated", where, nonempty=False)
    for n, e in enumerate(entries):
        key = "thresholds.gated" if isinstance(v, str) else f"thresholds.gated[{n}]"
        try:
            gated_entry(e)
        except ConfigError as exc:
            fail(where, key, e, "'<init>-<level>' (any backbone) or '<backbone>-<init>-<level>'", str(exc))
    return entries


def _accuracy_rule(raw: Any, split: str, where: str, key: str = "") -> AccuracyRule:
    key = key or f"thresholds.accuracy.{split}"
    d = read_table(raw, key, where)
    check_keys(d, list(AccuracyRule.__dataclass_fields__), key, where)
    a = AccuracyRule()
    g = lambda k: d.get(k, getattr(a, k))  # noqa: E731
    return AccuracyRule(
        soft_min=read_num(g("soft_min"), f"{key}.soft_min", where, 0, 1),
        soft_margin=_unit(g("soft_margin"), f"{key}.soft_margin", where),
        strict_min=_unit(g("strict_min"), f"{key}.strict_min", where),
        wilson_lower_min=_unit(g("wilson_lower_min"), f"{key}.wilson_lower_min", where),
        strict_above_constant=read_bool(g("strict_above_constant"), f"{key}.strict_above_constant", where),
        wilson_above_constant=read_bool(g("wilson_above_constant"), f"{key}.wilson_above_constant", where),
    )


def _cam_rule(raw: Any, where: str, key: str = "thresholds.cam") -> CamRule:
    d = read_table(raw, key, where)
    check_keys(d, [k for k in CamRule.__dataclass_fields__], key, where)
    c = CamRule()
    g = lambda k: d.get(k, getattr(c, k))  # noqa: E731
    return CamRule(
        split=read_str(g("split"), f"{key}.split", where, nonempty=False),
        energy_share_min=_unit(g("energy_share_min"), f"{key}.energy_share_min", where),
        pointing_rate_min=_unit(g("pointing_rate_min"), f"{key}.pointing_rate_min", where),
        energy_share_margin=_unit(g("energy_share_margin"), f"{key}.energy_share_margin", where),
        pointing_margin=_unit(g("pointing_margin"), f"{key}.pointing_margin", where),
        sanity_max=read_opt_num(g("sanity_max"), f"{key}.sanity_max", where, -1, 1),
    )


def _regression_rule(raw: Any, where: str) -> RegressionRule:
    d = read_table(raw, "thresholds.regression", where)
    check_keys(d, list(RegressionRule.__dataclass_fields__), "thresholds.regression", where)
    r = RegressionRule()
    return RegressionRule(
        max_drop=_unit(d.get("max_drop", r.max_drop), "thresholds.regression.max_drop", where),
        mcnemar_p=_unit(d.get("mcnemar_p", r.mcnemar_p), "thresholds.regression.mcnemar_p", where),
    )


def _selective_rule(raw: Any, where: str) -> SelectiveRule:
    d = read_table(raw, "thresholds.selective", where)
    check_keys(d, list(SelectiveRule.__dataclass_fields__), "thresholds.selective", where)
    r = SelectiveRule()
    return SelectiveRule(
        target=read_num(d.get("target", r.target), "thresholds.selective.target", where, 0, 1, min_open=True),
        coverage_at_target_min=_unit(
            d.get("coverage_at_target_min", r.coverage_at_target_min),
            "thresholds.selective.coverage_at_target_min",
            where,
        ),
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
    where, d = source, merged
    check_keys(d, list(Thresholds.__dataclass_fields__), "thresholds", where)
    t = Thresholds()
    g = lambda k: d.get(k, getattr(t, k))  # noqa: E731
    acc_raw = read_table(d.get("accuracy", {}), "thresholds.accuracy", where)
    return Thresholds(
        gated=_gated(g("gated"), where),
        seed_aggregate=read_choice(g("seed_aggregate"), "thresholds.seed_aggregate", where, ("worst", "mean")),
        accuracy={str(split): _accuracy_rule(rule, str(split), where) for split, rule in acc_raw.items()},
        accuracy_default=(
            _accuracy_rule(d["accuracy_default"], "default", where, "thresholds.accuracy_default")
            if "accuracy_default" in d
            else DEFAULT_ACCURACY_RULE
        ),
        cam=_cam_rule(d.get("cam", {}), where),
        occlusion=_cam_rule(d.get("occlusion", {}), where, "thresholds.occlusion"),
        rise=_cam_rule(d.get("rise", {}), where, "thresholds.rise"),
        regression=_regression_rule(d.get("regression", {}), where),
        selective=_selective_rule(d.get("selective", {}), where),
        parity_atol=read_num(g("parity_atol"), "thresholds.parity_atol", where, min=0, min_open=True),
        parity_rtol=read_num(g("parity_rtol"), "thresholds.parity_rtol", where, min=0),
        latency_batch=read_int(g("latency_batch"), "thresholds.latency_batch", where, min=1),
        latency_max_ms=read_opt_num(g("latency_max_ms"), "thresholds.latency_max_ms", where, min=0, min_open=True),
        calibration=read_str(g("calibration"), "thresholds.calibration", where, nonempty=False),
        source=source,
    )


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
    for method, key in SALIENCY_EVIDENCE.items():
        rule = thresholds.localization(method)
        if rule.configured and rule.split and rule.split not in test_sets:
            raise ConfigError(
                f"{where}: thresholds.{key}.split = {rule.split!r} is not a test set of this run "
                f"(test sets: {test_sets}){_closest(rule.split, test_sets)}"
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
    import dataclasses

    test_sets = list(test_sets)
    notes: list[str] = []
    dropped = [name for name in thresholds.accuracy if name not in test_sets]
    if dropped:
        notes.append(
            f"thresholds.accuracy.{{{', '.join(dropped)}}} not applied: this dataset's test sets are "
            f"{test_sets} (each gets the default rule)"
        )
    changes: dict[str, Any] = {"accuracy": {k: v for k, v in thresholds.accuracy.items() if k in test_sets}}
    for method, key in SALIENCY_EVIDENCE.items():
        rule = thresholds.localization(method)
        if rule.split and rule.split not in test_sets:
            changes[key] = dataclasses.replace(rule, split="")
            if rule.configured:
                notes.append(
                    f"thresholds.{key}.split = {rule.split!r} is not a test set of this dataset: "
                    f"localization is judged on every test set with labelled regions"
                )
    return dataclasses.replace(thresholds, **changes), notes
