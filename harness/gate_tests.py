"""The acceptance gate's tests: one per criterion of the table (test_<criterion>[<verdict id>]), parametrized over
the run's verdicts (harness.gate). Gated failures fail; ablations' failures xfail, with values; missing evidence
fails.

Collected by the pytest plugin (harness.pytest_plugin) when --harness-run-dir or --harness-profile is given, or by a
project's own test module that imports them all (`from harness.gate_tests import *`: its ids are its own).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness import gate
from harness.pytest_plugin import MARKER
from harness.verdicts import Verdict
from harness.verdicts.criteria import CRITERIA


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "verdict" not in metafunc.fixturenames:
        return
    criterion = metafunc.function.__name__.removeprefix("test_")
    params, ids = gate.parameters(metafunc.config, criterion)
    metafunc.parametrize("verdict", params, ids=ids, indirect=True)


@pytest.fixture()
def verdict(request: pytest.FixtureRequest) -> Verdict | gate.NoVerdict:
    """The real verdict for this test's (criterion, id), from the session's report (or why there is none)."""
    return gate.verdict_of(request.config, request.param)


def _criterion_test(name: str) -> Callable[..., None]:
    """test_<name>: checks the verdict of criterion `name` it is parametrized with."""

    def test(verdict: Verdict | gate.NoVerdict, request: pytest.FixtureRequest) -> None:
        gate.check(verdict, gate.property_recorder(request))

    test.__name__ = test.__qualname__ = f"test_{name}"
    test.__doc__ = f"The gate's verdict of criterion {name}: {CRITERIA[name].meaning}."
    return getattr(pytest.mark, MARKER)(test)


TESTS = {f"test_{name}": _criterion_test(name) for name in CRITERIA}
globals().update(TESTS)
__all__ = ["pytest_generate_tests", "verdict", *TESTS]
