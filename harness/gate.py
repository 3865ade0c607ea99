"""What the pytest gate judges (harness.pytest_plugin's options, harness.gate_tests' tests): the plan made at
collection (which run, which verdicts: the tests' ids), the report read or produced on first use, and each verdict's
outcome as a test.

It fails closed: a run directory another process holds (.harness.lock) is refused, naming the holder; a run whose
files differ from its report's manifest is refused; missing or unreadable evidence (an ERROR verdict) fails its test,
gated or not; a run that judges no model fails every criterion's test. A problem with the options, the profile, the
thresholds or the run directory is a collection error naming it (no traceback).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import artifacts, runlock
from harness.cli_commands import bundled_data
from harness.config import Profile, load_profile
from harness.data import DataError
from harness.pytest_plugin import GateOptions, GateState, options, state
from harness.report.build import build_report, thresholds_of_run, write_reports
from harness.run import fit_profile, run_matrix
from harness.rundir import default_run_dir
from harness.thresholds import Thresholds, parse_thresholds
from harness.validate import ConfigError
from harness.verdicts import ERROR, PASS, SKIP, Verdict, judge
from harness.verify import check as check_manifest
from harness.verify import recorded_manifest

# what a person can fix from the message: the gate stops at collection naming it, without a traceback
PROBLEMS = (ConfigError, DataError, FileNotFoundError, ValueError, runlock.RunLocked)


@dataclass(frozen=True)
class Plan:
    """The run the gate judges: an existing one (profile None) or one to produce first with `profile`."""

    run_dir: Path
    thresholds: Thresholds
    test_sets: list[str]
    variants: list[str]
    backbone: str
    run_profile: dict[str, Any]
    profile: Profile | None = None
    seeds: list[int] | None = None
    data: Path | None = None
    weights_file: Path | None = None


@dataclass(frozen=True)
class NoVerdict:
    """A test that has no verdict to check: skipped (nothing to judge, criterion not configured) or failed."""

    reason: str
    fail: bool = False


class GateProblem(pytest.Collector.CollectError):
    """A problem with the gate's options or run: shown at collection as its message alone."""


def lock_holder(lock: Path) -> str:
    """'pid P on host H (started T), running `C`' from a lock file's record (harness.runlock writes it)."""
    try:
        d = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        d = None
    if not isinstance(d, dict):
        return f"an unreadable lock file {lock}"
    return f"pid {d.get('pid')} on host {d.get('host')} (started {d.get('started')}), running `{d.get('command')}`"


def hold_run(run_dir: Path, gate: GateState) -> None:
    """Take the run directory's lock for the session (released at its end): a run still being written cannot be
    judged, and nothing may write into it while the gate reads it and rewrites its report."""
    lock = Path(run_dir) / runlock.LOCK_NAME
    try:
        gate.lock = runlock.acquire(run_dir, "pytest gate: " + " ".join(sys.argv))
    except runlock.RunLocked:
        raise GateProblem(
            f"harness gate: the run directory {run_dir} is locked by {lock_holder(lock)}: a run still being written "
            f"cannot be judged. Judge it once that command has finished; if that process is gone (another machine, "
            f"or a crash), delete {lock}"
        ) from None


def verify_manifest(run_dir: Path) -> None:
    """Refuse a run whose files are not the ones its report.json's manifest records (checked before the gate
    rewrites report.json); a run without a manifest is judged on its files alone (each verdict checks its model)."""
    recorded, _ = recorded_manifest(run_dir)
    problems = check_manifest(run_dir, recorded) if recorded is not None else []
    if problems:
        raise GateProblem(
            f"harness gate: {run_dir}: {len(problems)} file(s) differ from the manifest of its report.json "
            f"(harness verify {run_dir}):\n  " + "\n  ".join(problems)
        )


def _seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--harness-seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from None


def make_plan(opts: GateOptions, gate: GateState | None = None) -> Plan:
    """The plan for these options, checked before anything is trained (cheap). `gate`: the session's state, which
    holds the lock of a judged run directory."""
    if opts.run_dir is not None and opts.profile is not None:
        raise ConfigError("give either --harness-run-dir (judge a run) or --harness-profile (produce one), not both")
    if opts.run_dir is not None:
        run_dir = Path(opts.run_dir)
        if not (run_dir / "run.json").is_file():
            raise ConfigError(f"the run directory {run_dir} has no run.json; is it a harness run directory?")
        hold_run(run_dir, gate or GateState())
        verify_manifest(run_dir)
        proto = artifacts.read_json(run_dir / "run.json")
        return Plan(
            run_dir=run_dir,
            thresholds=thresholds_of_run(run_dir, opts.thresholds),
            test_sets=list(proto["profile"].get("test_sets") or []),
            variants=list(proto.get("variants") or []),
            backbone=str(proto["profile"].get("backbone", "")),
            run_profile=proto["profile"],
        )
    assert opts.profile is not None, "make_plan needs --harness-run-dir or --harness-profile"
    overrides = list(opts.sets) + ([f"backbone={opts.backbone}"] if opts.backbone else [])
    profile = load_profile(opts.profile, overrides)
    thresholds = parse_thresholds(profile.thresholds, profile.source, opts.thresholds)
    data = bundled_data(opts.data)
    # test sets discovered from the dataset when the profile names none, thresholds fitted to them
    profile, thresholds, _ = fit_profile(profile, thresholds, data)
    variants = opts.variants.split(",") if opts.variants else (list(thresholds.gated) or list(profile.variants))
    # the gate's run goes to reports/gate/, not reports/runs/: `latest` stays on the user's main run
    return Plan(
        run_dir=opts.out or default_run_dir(profile, under="gate"),
        thresholds=thresholds,
        test_sets=list(profile.test_sets),
        variants=variants,
        backbone=profile.backbone,
        run_profile=profile.to_dict(),
        profile=profile,
        seeds=_seeds(opts.seeds),
        data=data,
        weights_file=opts.weights_file,
    )


def plan(config: pytest.Config) -> Plan | None:
    """The session's plan (made once, at collection), None without the gate's options."""
    gate = state(config)
    if gate.plan is None:
        opts = options(config)
        if not opts.active:
            return None
        try:
            gate.plan = make_plan(opts, gate)
        except PROBLEMS as exc:
            raise GateProblem(f"harness gate: {exc}") from None
    return gate.plan


def planned(config: pytest.Config, p: Plan) -> list[Verdict]:
    """The same judge as the report, on what exists now (once per session): the tests' ids; the values come from
    the report at test time."""
    gate = state(config)
    if gate.planned is None:
        gate.planned = judge(Path(p.run_dir), p.thresholds, p.test_sets, p.variants, p.backbone, p.run_profile)
    return gate.planned


def parameters(config: pytest.Config, criterion: str) -> tuple[list[Any], list[str]]:
    """(params, ids) of test_<criterion>: one (criterion, verdict id) per verdict of the plan, or one NoVerdict."""
    p = plan(config)
    if p is None:
        return [NoVerdict("no run to judge: pass --harness-run-dir RUN or --harness-profile NAME")], ["no-run"]
    verdicts = planned(config, p)
    if not verdicts:
        why = (
            f"the run {p.run_dir} judges no model: no model folder, no gated or named variant; an empty run "
            f"cannot pass the gate"
        )
        return [NoVerdict(why, fail=True)], ["no-model"]
    mine = [v for v in verdicts if v.criterion == criterion]
    if not mine:
        return [NoVerdict(f"the thresholds define no {criterion} criterion")], ["not-configured"]
    return [(criterion, v.id) for v in mine], [v.id for v in mine]


def _produce(config: pytest.Config, p: Plan) -> dict[str, Any]:
    """Run the profile's matrix into the plan's run directory; its progress lines go to the terminal."""
    capture = config.pluginmanager.getplugin("capturemanager")
    quiet = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    assert p.profile is not None and p.data is not None
    with quiet:
        print(
            f"\nharness gate: producing the run {p.run_dir} (profile {p.profile.name}, variants "
            f"{', '.join(p.variants)}); progress below",
            file=sys.stderr,
            flush=True,
        )
        return run_matrix(p.profile, p.thresholds, p.data, p.run_dir, p.variants, p.seeds, p.weights_file)


def report(config: pytest.Config) -> dict[str, Any] | None:
    """Produce (--harness-profile) or read (--harness-run-dir) the run and its report, once per session, on first
    use; None when that failed (state(config).failure says why: every gate test fails with it)."""
    gate = state(config)
    if gate.report is None and gate.failure is None:
        p = plan(config)
        assert p is not None
        try:
            if p.profile is not None:
                gate.report = _produce(config, p)
            else:
                gate.report = build_report(p.run_dir, p.thresholds)
                write_reports(p.run_dir, gate.report)
        except PROBLEMS as exc:
            gate.failure = f"harness gate: {exc}"
    return gate.report


def verdict_of(config: pytest.Config, param: Any) -> Verdict | NoVerdict:
    """The report's verdict for a test's parameter (criterion, id), or why there is none (the test fails with it)."""
    if isinstance(param, NoVerdict):
        return param
    criterion, vid = param
    found = report(config)
    if found is None:
        return NoVerdict(str(state(config).failure), fail=True)
    fields = set(Verdict.__dataclass_fields__)
    for d in found["verdicts"]:
        if d["criterion"] == criterion and d["id"] == vid:
            kwargs: dict[str, Any] = {k: (tuple(v) if k == "evidence" else v) for k, v in d.items() if k in fields}
            return Verdict(**kwargs)
    return NoVerdict(f"the report has no verdict {criterion}[{vid}]", fail=True)


def property_recorder(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """Records a (name, value) property of the test for its JUnit testcase, as pytest's record_property does, where
    the JUnit family keeps them (xunit1, legacy: this repository's); under xunit2 (pytest's default) properties are
    not part of a testcase, so none is recorded there (record_property would warn), and the values stay in the
    test's output."""
    if request.config.getini("junit_family") == "xunit2":
        return lambda name, value: None
    return lambda name, value: request.node.user_properties.append((name, value))


def message(v: Verdict) -> str:
    value = "n/a" if v.value is None else f"{v.value:.4g}"
    thr = "n/a" if v.threshold is None else f"{v.threshold:.4g}"
    seeds = ", ".join(f"{k}={'n/a' if x is None else f'{x:.4g}'}" for k, x in v.per_seed.items())
    return (
        f"{v.criterion}[{v.id}] {v.status}: measured {value} {v.comparison} threshold {thr} "
        f"({v.detail}; seeds {seeds}); evidence: {', '.join(v.evidence)}"
    )


def check(v: Verdict | NoVerdict, record_property: Callable[[str, object], None]) -> None:
    """The verdict as a test outcome: PASS passes, SKIP skips (no threshold, or nothing to judge on that test set),
    a gated FAIL fails and an ablation's FAIL xfails; ERROR (evidence missing or unreadable) fails, gated or not.
    No verdict: skipped (nothing to judge, criterion not configured) or failed (no model judged, no report)."""
    if isinstance(v, NoVerdict):
        if v.fail:
            pytest.fail(v.reason, pytrace=False)
        pytest.skip(v.reason)
    record_property("status", v.status)
    record_property("measured", v.value)
    record_property("threshold", v.threshold)
    record_property("gated", v.gated)
    msg = message(v)
    print(msg)
    if v.status == PASS:
        return
    if v.status == SKIP:
        pytest.skip(msg)
    if v.status == ERROR:
        what = "" if v.gated else "an ablation, but its "
        pytest.fail(f"ERROR ({what}evidence missing or unreadable: the run is incomplete) {msg}", pytrace=False)
    if not v.gated:
        pytest.xfail(f"ablation, not gated: {msg}")
    pytest.fail(msg, pytrace=False)
