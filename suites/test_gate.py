"""The acceptance gate: one test per criterion of the table (test_<criterion>[<verdict id>]), parametrized over its
verdicts by conftest.py. Gated failures fail; ablations pass or xfail, with values."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.verdicts import ERROR, PASS, SKIP, Verdict
from harness.verdicts.criteria import CRITERIA


def _message(v: Verdict) -> str:
    value = "n/a" if v.value is None else f"{v.value:.4g}"
    thr = "n/a" if v.threshold is None else f"{v.threshold:.4g}"
    seeds = ", ".join(f"{k}={'n/a' if x is None else f'{x:.4g}'}" for k, x in v.per_seed.items())
    return (
        f"{v.criterion}[{v.id}] {v.status}: measured {value} {v.comparison} threshold {thr} "
        f"({v.detail}; seeds {seeds}); evidence: {', '.join(v.evidence)}"
    )


def check(v: Verdict, record_property) -> None:
    record_property("status", v.status)
    record_property("measured", v.value)
    record_property("threshold", v.threshold)
    record_property("gated", v.gated)
    msg = _message(v)
    print(msg)
    if v.status == PASS:
        return
    if v.status == SKIP:
        pytest.skip(msg)
    if not v.gated:
        pytest.xfail(f"ablation, not gated: {msg}")
    pytest.fail(("ERROR (evidence missing or unreadable) " if v.status == ERROR else "") + msg, pytrace=False)


def _criterion_test(name: str) -> Callable[..., None]:
    """test_<name>: checks the verdict of criterion `name` it is parametrized with (conftest.py)."""

    def test(verdict, record_property):
        check(verdict, record_property)

    test.__name__ = test.__qualname__ = f"test_{name}"
    test.__doc__ = f"The gate's verdict of criterion {name}: {CRITERIA[name].meaning}."
    return test


globals().update({f"test_{name}": _criterion_test(name) for name in CRITERIA})
