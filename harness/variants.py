"""The model matrix's names: an init (INITS) and an augmentation level (harness.augment.LEVELS) make a variant
'<init>-<level>'; `split_variant` is the one reader of that name."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from harness.augment import LEVELS
from harness.validate import ConfigError

INITS = ("scratch", "imagenet")


def split_variant(variant: str) -> tuple[str, str]:
    """'imagenet-all' -> ('imagenet', 'all'), with a clear error for anything else (unknown init or level)."""
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


EVERY_MODEL = "*"  # thresholds.gated = ["*"]: every model of the run is gated (harness check)


def gated_by(entries: Sequence[str], backbone: str, variant: str) -> bool:
    """Whether `variant` ('imagenet-all') of `backbone` is named by a thresholds.gated list: an entry 'imagenet-all',
    'vgg16-imagenet-all' or '*'."""
    return EVERY_MODEL in entries or variant in entries or f"{backbone}-{variant}" in entries
