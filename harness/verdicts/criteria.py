"""Every criterion a verdict can have, as data: one table read by the judge (comparison, reader, seed aggregate), the
HTML report (wording, unit) and the pytest gate (one test each); localization criteria come from the registry."""

from __future__ import annotations

from dataclasses import dataclass

from harness.robustness.readers import read_depends_on_object, read_faithfulness, read_robustness
from harness.saliency.registry import METHODS, MethodInfo
from harness.verdicts.readers import (
    Reader,
    read_coverage_at_target,
    read_latency,
    read_localization,
    read_parity,
    read_sanity,
    read_soft,
    read_soft_minus_constant,
    read_strict,
    read_strict_minus_constant,
    read_wilson_lower,
    read_wilson_minus_constant,
)

# families: what part of the protocol a criterion judges
ACCURACY, JUDGED, SELECTIVE, LOCALIZATION, EXPORT, LATENCY = (
    "accuracy",
    "judged",
    "selective",
    "localization",
    "export",
    "latency",
)
ROBUSTNESS = "robustness"  # corruptions, object masking, faithfulness of the maps (harness.robustness)
PROTOCOL = "protocol"  # the run as a whole: its sealed protocol, something gated, some model judged
DATA = "data"  # the dataset itself (harness.audit): test sets independent of training, labels; no model
BASELINE = "baseline"  # the model against the baseline ladder's linear probe (harness.baselines)
# units: how a value is shown; RATE a share in [0, 1], MARGIN a signed difference of rates, LOGIT a tiny logit
# difference (scientific notation), MS milliseconds, COUNT a whole number
RATE, MARGIN, LOGIT, MS, COUNT = "rate", "margin", "logit", "ms", "count"
# aspects of a localization criterion
ENERGY, POINTING, SANITY = "energy", "pointing", "sanity"


@dataclass(frozen=True)
class Criterion:
    name: str  # Verdict.criterion; the gate's test is test_<name>
    comparison: str  # value against threshold: ">=", ">" or "<="
    reader: Reader | None  # one seed run's value; None where the judge counts instead (test_sets_judged)
    family: str  # ACCURACY, JUDGED, SELECTIVE, LOCALIZATION, EXPORT or LATENCY
    meaning: str  # what it measures, as the report's glossary says it for any dataset
    book: str = ""  # the wording for the bundled book dataset where it differs ("" = meaning)
    unit: str = RATE
    worst: bool = False  # always the worst seed (else the thresholds' seed_aggregate)
    method: str = ""  # a localization criterion's saliency method (a registry name)
    aspect: str = ""  # a localization criterion's ENERGY, POINTING or SANITY

    def wording(self, book: bool) -> str:
        """The glossary line: the book dataset's wording (`book`) or the neutral one."""
        return (self.book or self.meaning) if book else self.meaning


def _localization(m: MethodInfo) -> tuple[Criterion, ...]:
    """A saliency method's criteria: energy share and pointing rate per test set, and the sanity check of its maps."""
    return (
        Criterion(
            f"{m.evidence}_{ENERGY}",
            ">=",
            read_localization,
            LOCALIZATION,
            f"share of the {m.title} heat that falls inside the labelled regions",
            f"share of the {m.title} heat that falls inside the labelled book covers",
            method=m.name,
            aspect=ENERGY,
        ),
        Criterion(
            f"{m.evidence}_{POINTING}",
            ">=",
            read_localization,
            LOCALIZATION,
            f"share of labelled regions whose {m.title} peak lies on (within 15 px of) the region",
            f"share of labelled covers whose {m.title} peak lies on (within 15 px of) the cover",
            method=m.name,
            aspect=POINTING,
        ),
        Criterion(
            f"{m.evidence}_{SANITY}",
            "<=",
            read_sanity,
            LOCALIZATION,
            f"rank correlation of the {m.title} maps with those of the model whose last layer was randomised "
            "(high: the maps do not depend on what the model learnt)",
            worst=True,
            method=m.name,
            aspect=SANITY,
        ),
    )


_TABLE: tuple[Criterion, ...] = (
    Criterion(
        "accuracy",
        ">=",
        read_soft,
        ACCURACY,
        "soft accuracy: share of images where the model names one of the acceptable labels",
        "soft accuracy: share of photos where the model names one of the books in the photo",
    ),
    Criterion(
        "soft_above_constant",
        ">",
        read_soft_minus_constant,
        ACCURACY,
        "soft accuracy minus that of always giving the best single answer (must be above 0)",
        unit=MARGIN,
    ),
    Criterion(
        "strict_above_constant",
        ">",
        read_strict_minus_constant,
        ACCURACY,
        "strict accuracy (the image's primary label) minus that of the best single answer",
        "strict accuracy (the photo's main book) minus that of the best single answer",
        unit=MARGIN,
    ),
    Criterion(
        "strict_accuracy",
        ">=",
        read_strict,
        ACCURACY,
        "strict accuracy: share of images where the model names the image's primary label",
        "strict accuracy: share of photos where the model names the photo's main book",
    ),
    Criterion(
        "wilson_lower",
        ">=",
        read_wilson_lower,
        ACCURACY,
        "lower end of the 95% Wilson interval of soft accuracy (few test images: wide intervals)",
        "lower end of the 95% Wilson interval of soft accuracy (few test photos: wide intervals)",
    ),
    Criterion(
        "wilson_above_constant",
        ">",
        read_wilson_minus_constant,
        ACCURACY,
        "lower end of the 95% Wilson interval of soft accuracy minus the best single answer's accuracy (must be "
        "above 0: the claim survives the small test set)",
        unit=MARGIN,
    ),
    Criterion(
        "test_sets_judged",
        ">=",
        None,
        JUDGED,
        "how many of the run's test sets an accuracy criterion judged (all of them, or ERROR)",
        unit=COUNT,
    ),
    Criterion(
        "protocol",
        "<=",
        None,
        PROTOCOL,
        "problems with the run's protocol (must be 0): run.json's gated models, thresholds and identity against the "
        "hash recorded when the run was made, a run made gated that now gates nothing, a run with no model to judge",
        unit=COUNT,
    ),
    Criterion(  # read by harness.audit.readers from audit.json (no model: reader None here)
        "test_independence",
        "<=",
        None,
        DATA,
        "share of the test set's images that are near copies of a training image: exact or perceptual-hash copies, "
        "or at least as close to it (frozen ImageNet features) as the median training image is to its nearest other "
        "(high: the test set measures recall of seen images, not generalisation)",
        "share of the test set's photos that are near copies of a training photo: exact or perceptual-hash copies, "
        "or at least as close to it (frozen ImageNet features) as the median training photo is to its nearest other "
        "(high: the test set measures recall of seen scenes, not generalisation)",
    ),
    Criterion(
        "label_suspects",
        "<=",
        None,
        DATA,
        "share of a set's images whose label cleanlab flags (out-of-sample logistic regression on frozen ImageNet "
        "features) and whose suggested label the image does not accept",
        "share of a set's photos whose label cleanlab flags (out-of-sample logistic regression on frozen ImageNet "
        "features) and whose suggested book the photo's labels do not accept",
    ),
    Criterion(  # judged by harness.baselines.judging from baselines.json and metrics.json (no reader here)
        "beats_probe",
        ">=",
        None,
        BASELINE,
        "soft accuracy minus that of a linear probe on frozen ImageNet features trained on the same training split "
        "(at least 0, or minus [thresholds.probe] soft_margin, and not significantly worse by the exact McNemar test "
        "on the images where they disagree)",
        "soft accuracy minus that of a linear probe on frozen ImageNet features trained on the same training photos "
        "(at least 0, or minus [thresholds.probe] soft_margin, and not significantly worse by the exact McNemar test "
        "on the photos where they disagree)",
        unit=MARGIN,
        worst=True,
    ),
    Criterion(
        "coverage_at_target",
        ">=",
        read_coverage_at_target,
        SELECTIVE,
        "share of the test set answered when answering only above the lowest confidence where soft accuracy "
        "reaches the target",
    ),
    *(c for m in METHODS.values() for c in _localization(m)),
    Criterion(
        "robustness",
        "<=",
        read_robustness,
        ROBUSTNESS,
        "drop of soft accuracy when the test images are corrupted (noise, blur, light, JPEG...), from the same images "
        "clean, at the worst judged severity",
        "drop of soft accuracy when the test photos are corrupted (noise, blur, light, JPEG...), from the same photos "
        "clean, at the worst judged severity",
    ),
    Criterion(
        "depends_on_object",
        ">",
        read_depends_on_object,
        ROBUSTNESS,
        "how much more often the answer is lost when the labelled regions are hidden than when a region of the same "
        "shape is hidden elsewhere (lower 95% bound of the difference)",
        "how much more often the answer is lost when the book covers are hidden than when a region of the same shape "
        "is hidden elsewhere (lower 95% bound of the difference)",
        unit=MARGIN,
    ),
    Criterion(
        "faithfulness",
        ">",
        read_faithfulness,
        ROBUSTNESS,
        "how much faster the answer falls when the map's most salient pixels are deleted, and rises when they are "
        "inserted, than with a random map (insertion minus deletion AUC, minus the random map's)",
        unit=MARGIN,
    ),
    Criterion(
        "onnx_parity",
        "<=",
        read_parity,
        EXPORT,
        "largest difference between the PyTorch model and the exported ONNX model (logits)",
        unit=LOGIT,
        worst=True,
    ),
    Criterion(
        "latency",
        "<=",
        read_latency,
        LATENCY,
        "median time of one onnxruntime CPU call (milliseconds)",
        unit=MS,
        worst=True,
    ),
)

CRITERIA: dict[str, Criterion] = {c.name: c for c in _TABLE}
ACCURACY_CRITERIA = tuple(c.name for c in _TABLE if c.family == ACCURACY)


def criterion(name: str) -> Criterion:
    """The table's entry of a criterion name (KeyError naming the known ones)."""
    if name not in CRITERIA:
        raise KeyError(f"unknown criterion {name!r}; known: {sorted(CRITERIA)}")
    return CRITERIA[name]


def localization_criterion(method: str, aspect: str) -> Criterion:
    """The criterion of a saliency method (registry name) and aspect (ENERGY, POINTING or SANITY)."""
    return next(c for c in _TABLE if c.method == method and c.aspect == aspect)


def judges_a_test_set(name: str) -> bool:
    """True for the criteria that judge a test set's accuracy or localization (the report's 'judged' table)."""
    c = CRITERIA.get(name)
    return c is not None and (c.family == ACCURACY or (c.family == LOCALIZATION and c.aspect in (ENERGY, POINTING)))
