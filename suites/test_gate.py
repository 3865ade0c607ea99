"""The acceptance gate: one test per criterion of the table (test_<criterion>[<verdict id>]), parametrized over its
verdicts: the tests of the pytest plugin (harness.gate_tests), collected here so their ids are this module's."""

from harness.gate_tests import *  # noqa: F403 - the tests, their `verdict` fixture and pytest_generate_tests
