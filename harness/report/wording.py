"""What the report says in words: the bundled book dataset's wording against any other dataset's, labels of the
training variants, the 2018 reference figures, the verdict sentences and the criteria glossary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.report.format import dig
from harness.saliency.registry import method_info
from harness.verdicts.criteria import CRITERIA

INIT_ORDER = ("scratch", "imagenet")
INIT_LABELS = {"scratch": "scratch", "imagenet": "ImageNet"}
LEVEL_ORDER = ("none", "mixup", "usual", "all")
LEVEL_LABELS = {"none": "no augmentation", "mixup": "mixup only", "usual": "usual augmentation", "all": "usual + mixup"}
LEVEL_MEANING = {
    "none": "no augmentation",
    "mixup": "mixup of pairs of training images and their labels only",
    "usual": "flips, rotation, zoom and random erasing",
    "all": "the usual augmentation plus mixup",
}

# The reference experiment's single runs (Keras VGG16, 224 px, 2018; REFERENCE.md), soft accuracy easy / difficult.
REFERENCE_2018 = {
    ("scratch", "none"): (0.33, 0.10),
    ("scratch", "mixup"): (0.33, 0.25),
    ("scratch", "usual"): (0.83, 0.60),
    ("scratch", "all"): (1.00, 0.65),
    ("imagenet", "none"): (0.83, 0.35),
    ("imagenet", "mixup"): (1.00, 0.35),
    ("imagenet", "usual"): (1.00, 0.85),
    ("imagenet", "all"): (1.00, 0.95),
}
AUTOML_2018 = "the 2018 comparison's AutoML model answered only when confident: 10 of 20 difficult photos right"

# The bundled dataset (data/small-book-images): its classes. Only a run on these classes gets the 2018 reference and
# the wording about books and covers; any other dataset gets neutral wording (WORDS[False], Criterion.meaning).
BOOK_CLASSES = frozenset({"background", "bayes", "geeks", "keras", "nlp", "technium"})

# Template phrases that differ between the bundled book dataset (True) and any other (False).
WORDS = {
    True: {
        "item": "photo",
        "items": "photos",
        "layout": "Laid out like the reference experiment's table.",
        "soft": "the answer names one of the books in the photo",
        "strict": "the photo's main book",
        "shared": "Several books share most difficult photos, so even guessing scores well on soft accuracy there.",
        "confusion_rows": "the photo's main (primary) book",
        "regions": "the labelled covers",
        "good_heat": "A good model's heat sits on a book cover, not on the floor or the photo's edges.",
    },
    False: {
        "item": "image",
        "items": "images",
        "layout": "Rows: weight initialisation; columns: augmentation level.",
        "soft": "the answer is one of the image's acceptable labels",
        "strict": "the image's primary label",
        "shared": "Where images accept several labels, even guessing scores well on soft accuracy.",
        "confusion_rows": "the image's primary label",
        "regions": "the labelled regions",
        "good_heat": "A good model's heat sits on the labelled object, not on the background or the image's edges.",
    },
}

NO_REGIONS = "localization skipped: no labelled regions"

VERDICT_TEXT = {
    "PASS": "Every gated criterion passed: the gated model meets the acceptance thresholds.",
    "FAIL": "At least one gated criterion failed: the gated model does not meet the acceptance thresholds.",
    "ERROR": "Some evidence is missing, so the gate could not decide: rerun the steps that write it.",
    "UNGATED": "No variant is gated in this profile: every figure below is for information only.",
}


def criteria_meanings(book: bool) -> dict[str, str]:
    """criterion -> its glossary line, in the criteria table's order (the book dataset's wording when `book`)."""
    return {name: c.wording(book) for name, c in CRITERIA.items()}


def method_title(key: Any) -> Any:
    """The report title of a saliency method's evidence key or name ('cam' -> 'Grad-CAM'); an unknown key as it is."""
    try:
        return method_info(str(key)).title
    except KeyError:
        return key


def report_classes(report: Mapping[str, Any]) -> tuple[str, ...]:
    """The run's classes: run.json's data classes (protocol.data.classes; a check run's protocol.classes), else the
    classes recorded in any variant's metrics (per test set); () when the report names none."""
    for where in (dig(report, "protocol", "data", "classes"), dig(report, "protocol", "classes")):
        if isinstance(where, (list, tuple)) and where:
            return tuple(str(c) for c in where)
    for entry in (report.get("variants") or {}).values():
        if not isinstance(entry, Mapping):
            continue
        candidates = [entry.get("classes")] + [
            m.get("classes") for m in (entry.get("test_sets") or {}).values() if isinstance(m, Mapping)
        ]
        for c in candidates:
            if isinstance(c, (list, tuple)) and c:
                return tuple(str(x) for x in c)
    return ()


def is_book_dataset(report: Mapping[str, Any]) -> bool:
    """True when the run's classes are exactly the bundled book dataset's (BOOK_CLASSES): only then does the report
    show the 2018 reference and speak of books and covers."""
    return set(report_classes(report)) == BOOK_CLASSES
