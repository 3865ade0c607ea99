"""The acceptance gate as a pytest plugin (entry point `pytest11: harness`), in any project where harness is installed:

    pytest --harness-run-dir RUN          judge an existing run directory
    pytest --harness-profile cpu          produce a run with that profile first, then judge it

One test per criterion of the table, parametrized by the run's verdicts: test_<criterion>[<verdict id>] (the tests
live in harness.gate_tests; what they judge comes from harness.gate). A project with a module of its own that holds
the gate's tests (`from harness.gate_tests import *`, as this repository's suites/test_gate.py does) keeps its ids;
elsewhere the plugin adds harness.gate_tests to the collection.

Inert unless --harness-run-dir or --harness-profile is given: this module registers options, a marker and a few
hooks, and imports nothing heavy (no torch): the gate's machinery is imported with its test module, by pytest, only
when a run is to be judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import runlock
from harness.version import __version__

MARKER = "harness_gate"
GATE_TESTS = Path(__file__).with_name("gate_tests.py")  # the module of the gate's tests, collected by path
NODE_ID = "harness/gate_tests.py"  # its node id wherever harness is installed (site-packages or a checkout)


@dataclass(frozen=True)
class Option:
    name: str  # GateOptions field; the flag is --harness-<name with dashes>, the short alias --<name with dashes>
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def flag(self) -> str:
        return "--harness-" + self.name.replace("_", "-")


OPTIONS = (
    Option("run_dir", "judge this existing run directory (e.g. reports/latest)", {"type": Path, "metavar": "RUN"}),
    Option("profile", "produce a run with this profile first (smoke, cpu, full or a .toml path), then judge it"),
    Option("backbone", "with --harness-profile: override the profile's backbone"),
    Option("variants", "with --harness-profile: comma-separated variants (default: the gated ones, else all)"),
    Option("seeds", "with --harness-profile: comma-separated seeds (default: the profile's)"),
    Option("data", "with --harness-profile: dataset root (default: the bundled one)", {"type": Path}),
    Option("weights_file", "with --harness-profile: ImageNet weights file for VGG16", {"type": Path}),
    Option("thresholds", "TOML file overriding the thresholds", {"type": Path}),
    Option(
        "out",
        "with --harness-profile: the run directory to create (default reports/gate/<time>-...: its own folder, so "
        "reports/latest keeps pointing at the main run)",
        {"type": Path},
    ),
)
# the flags a project may also offer under short names (this repository's suites/: --run-dir, --profile, ...)
SHORT = tuple(o.name for o in OPTIONS)


@dataclass(frozen=True)
class GateOptions:
    """What the gate was asked to judge: --harness-run-dir, or --harness-profile and how to produce its run."""

    run_dir: Path | None = None
    profile: str | None = None
    backbone: str | None = None
    variants: str | None = None
    seeds: str | None = None
    data: Path | None = None
    weights_file: Path | None = None
    thresholds: Path | None = None
    out: Path | None = None
    sets: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.run_dir is not None or self.profile is not None


@dataclass
class GateState:
    """One session's gate (config.stash): the plan made at collection, the report once read or produced, the lock
    held on a judged run directory. Filled by harness.gate."""

    plan: Any = None
    planned: list[Any] | None = None
    report: dict[str, Any] | None = None
    failure: str | None = None  # why the report could not be read or produced: every gate test fails with it
    lock: Path | None = None


STATE = pytest.StashKey[GateState]()


def options(config: pytest.Config) -> GateOptions:
    """The gate's options of this session: each --harness-<name>, else the project's short alias --<name>."""
    values: dict[str, Any] = {}
    for o in OPTIONS:
        value = config.getoption(f"harness_{o.name}", None)
        values[o.name] = value if value is not None else config.getoption(f"harness_alias_{o.name}", None)
    return GateOptions(**values, sets=tuple(config.getoption("harness_set", None) or ()))


def state(config: pytest.Config) -> GateState:
    if STATE not in config.stash:
        config.stash[STATE] = GateState()
    return config.stash[STATE]


def add_short_options(parser: pytest.Parser, names: tuple[str, ...] = SHORT) -> None:
    """Register --<name> (--run-dir, --profile, ...) as a project's own names for the plugin's --harness-<name>
    options (a conftest.py's pytest_addoption calls this; the --harness- flag wins when both are given)."""
    group = parser.getgroup("harness", "harness acceptance gate")
    for o in OPTIONS:
        if o.name in names:
            group.addoption(
                "--" + o.name.replace("_", "-"), dest=f"harness_alias_{o.name}", help=f"= {o.flag}", **o.kwargs
            )


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "harness acceptance gate")
    for o in OPTIONS:
        group.addoption(o.flag, dest=f"harness_{o.name}", help=o.help, **o.kwargs)
    group.addoption(
        "--harness-set",
        dest="harness_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --harness-profile: a profile override (TOML value; repeatable)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a test of the harness acceptance gate (one verdict of a criterion)")


class GateModule(pytest.Module):
    """harness.gate_tests collected with a node id of its own (the file may sit in site-packages, outside rootdir)."""


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect, so they apply to the gate's tests too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """With the gate's options and no module of the project holding its tests (nor one that failed to collect, as a
    gate module does on a bad option), collect harness.gate_tests."""
    if not options(config).active or session.testsfailed or any(item.get_closest_marker(MARKER) for item in items):
        return
    module = GateModule.from_parent(session, path=GATE_TESTS, nodeid=NODE_ID)
    items.extend(session.genitems(module))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    gate = config.stash.get(STATE, None)
    if gate is None or gate.plan is None:
        return
    run_dir = Path(gate.plan.run_dir)
    where = f"harness {__version__} from {Path(__file__).resolve().parent}"
    if gate.report:
        # an ablation standing on missing evidence (ERROR) fails its test though the report's verdict counts only the
        # gated criteria: the banner says so, so that it never reads PASS above a failed session
        errors = [v for v in gate.report.get("verdicts") or [] if v.get("status") == "ERROR" and not v.get("gated")]
        also = (
            f" (and {len(errors)} ablation verdict(s) ERROR: evidence missing or unreadable, their tests fail)"
            if errors
            else ""
        )
        terminalreporter.write_sep("=", f"harness gate: {gate.report['verdict']}{also}")
        terminalreporter.write_line(
            f"run: {run_dir}  report: {run_dir / 'report.html'}  summary: {run_dir / 'summary.md'}  ({where})"
        )
    elif gate.failure:
        terminalreporter.write_sep("=", "harness gate: ERROR")
        terminalreporter.write_line(f"run: {run_dir}: {gate.failure}  ({where})")


def pytest_unconfigure(config: pytest.Config) -> None:
    gate = config.stash.get(STATE, None)
    if gate is not None and gate.lock is not None:
        runlock.release(gate.lock)
        gate.lock = None
