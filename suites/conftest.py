"""This repository's gate is the pytest plugin harness.pytest_plugin (installed with harness): here its options also go
by their short names (`pytest suites --run-dir RUN`, `pytest tests suites --profile cpu`), and suites/test_gate.py
holds its tests, so their ids stay suites/test_gate.py::test_<criterion>[<verdict id>]."""

from __future__ import annotations

import pytest

from harness.pytest_plugin import add_short_options


def pytest_addoption(parser: pytest.Parser) -> None:
    add_short_options(parser)  # --run-dir, --profile, --backbone, ... = --harness-run-dir, --harness-profile, ...
