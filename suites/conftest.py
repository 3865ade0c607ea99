"""The acceptance gate's plumbing: judge a run (--run-dir) or produce one first (--profile), one test per verdict."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

from harness import artifacts
from harness.config import load_profile
from harness.data import DataError
from harness.report.build import build_report, thresholds_of_run, write_reports
from harness.run import fit_profile, run_matrix
from harness.rundir import default_run_dir
from harness.thresholds import parse_thresholds
from harness.validate import ConfigError
from harness.verdicts import Verdict, judge
from harness.verify import check as check_manifest
from harness.verify import recorded_manifest

_STATE: dict[str, object] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("harness gate")
    g.addoption("--run-dir", type=Path, help="judge an existing run directory (e.g. reports/latest)")
    g.addoption("--profile", help="produce a run with this profile first (smoke, cpu, full or a .toml path)")
    g.addoption("--backbone", help="override the profile's backbone")
    g.addoption("--variants", help="comma-separated variants to run (default: the gated ones, else all)")
    g.addoption("--seeds", help="comma-separated seeds (default: the profile's)")
    g.addoption("--data", type=Path, default=Path("data/small-book-images"), help="dataset root")
    g.addoption("--weights-file", type=Path, help="ImageNet weights file for VGG16")
    g.addoption("--thresholds", type=Path, help="TOML file overriding the thresholds")
    g.addoption("--harness-set", action="append", default=[], metavar="KEY=VALUE", help="profile override (repeatable)")
    g.addoption(
        "--out",
        type=Path,
        help="run directory to create with --profile (default reports/gate/<time>-...: "
        "its own folder, so reports/latest keeps pointing at the main run)",
    )


def _plan(config: pytest.Config) -> dict:
    """Decide at collection time what the gate judges, without training anything yet (cheap); a bad option, profile
    or thresholds file is a usage error naming it, not a traceback."""
    try:
        return _make_plan(config)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as exc:
        raise pytest.UsageError(f"harness gate: {exc}") from None


def _verify(run_dir: Path) -> None:
    """Refuse a run whose files are not the ones its report.json's manifest records (checked before the gate rewrites
    report.json); a run without a manifest is judged on its files alone (each verdict checks its model's hash)."""
    recorded, _ = recorded_manifest(run_dir)
    problems = check_manifest(run_dir, recorded) if recorded is not None else []
    if problems:
        raise pytest.UsageError(
            f"--run-dir {run_dir}: {len(problems)} file(s) differ from the manifest of its report.json "
            f"(harness verify {run_dir}):\n  " + "\n  ".join(problems)
        )


def _make_plan(config: pytest.Config) -> dict:
    if "plan" in _STATE:
        return _STATE["plan"]  # type: ignore[return-value]
    run_dir, profile_name = config.getoption("--run-dir"), config.getoption("--profile")
    plan: dict = {}
    if run_dir is not None and profile_name is not None:
        raise pytest.UsageError("give either --run-dir (judge a run) or --profile (produce one), not both")
    if run_dir is not None:
        if not (run_dir / "run.json").is_file():
            raise pytest.UsageError(f"--run-dir {run_dir}: no run.json there; is it a harness run directory?")
        _verify(run_dir)
        proto = artifacts.read_json(run_dir / "run.json")
        plan = {
            "run_dir": run_dir,
            "thresholds": thresholds_of_run(run_dir, config.getoption("--thresholds")),
            "test_sets": list(proto["profile"].get("test_sets") or []),
            "variants": proto.get("variants", []),
            "backbone": str(proto["profile"].get("backbone", "")),
            "run_profile": proto["profile"],
        }
    elif profile_name is not None:
        overrides = list(config.getoption("--harness-set"))
        if config.getoption("--backbone"):
            overrides.append(f"backbone={config.getoption('--backbone')}")
        profile = load_profile(profile_name, overrides)
        thresholds = parse_thresholds(profile.thresholds, profile.source, config.getoption("--thresholds"))
        # test sets discovered from the dataset when the profile names none, thresholds fitted to them
        profile, thresholds, _ = fit_profile(profile, thresholds, config.getoption("--data"))
        variants = config.getoption("--variants")
        variants = variants.split(",") if variants else (list(thresholds.gated) or list(profile.variants))
        seeds = config.getoption("--seeds")
        # the gate's run goes to reports/gate/, not reports/runs/: `latest` stays on the user's main run
        plan = {
            "run_dir": config.getoption("--out") or default_run_dir(profile, under="gate"),
            "profile": profile,
            "thresholds": thresholds,
            "test_sets": list(profile.test_sets),
            "variants": variants,
            "backbone": profile.backbone,
            "run_profile": profile.to_dict(),
            "seeds": [int(s) for s in seeds.split(",")] if seeds else None,
        }
    _STATE["plan"] = plan
    return plan


def _report(config: pytest.Config) -> dict:
    """Produce (--profile) or read (--run-dir) the run and its report, once per session, on first use."""
    if "report" not in _STATE:
        plan = _plan(config)
        if "profile" in plan:
            # the run takes minutes: its progress lines go to the terminal, not into pytest's capture
            capture = config.pluginmanager.getplugin("capturemanager")
            quiet = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
            with quiet:
                print(
                    f"\nharness gate: producing the run {plan['run_dir']} (profile {plan['profile'].name}, "
                    f"variants {', '.join(plan['variants'])}); progress below",
                    file=sys.stderr,
                    flush=True,
                )
                report = run_matrix(
                    plan["profile"],
                    plan["thresholds"],
                    config.getoption("--data"),
                    plan["run_dir"],
                    plan["variants"],
                    plan["seeds"],
                    config.getoption("--weights-file"),
                )
        else:
            report = build_report(plan["run_dir"], plan["thresholds"])
            write_reports(plan["run_dir"], report)
        _STATE["report"] = report
    return _STATE["report"]  # type: ignore[return-value]


@pytest.fixture()
def verdict(request):
    """The real verdict for this test's (criterion, id), from the session's report."""
    criterion, vid = request.param
    report = _report(request.config)
    fields = set(Verdict.__dataclass_fields__)
    for d in report["verdicts"]:
        if d["criterion"] == criterion and d["id"] == vid:
            return Verdict(**{k: (tuple(v) if k == "evidence" else v) for k, v in d.items() if k in fields})
    pytest.fail(f"the report has no verdict {criterion}[{vid}]", pytrace=False)


def _planned(plan: dict) -> list[Verdict]:
    """The same judge as the report, on what exists now (once per session): gives the test ids; the values come from
    the report at test time."""
    if "planned" not in _STATE:
        _STATE["planned"] = judge(
            Path(plan["run_dir"]),
            plan["thresholds"],
            plan["test_sets"],
            plan["variants"],
            plan["backbone"],
            plan["run_profile"],
        )
    return _STATE["planned"]  # type: ignore[return-value]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "verdict" not in metafunc.fixturenames:
        return
    criterion = metafunc.function.__name__.removeprefix("test_")
    plan = _plan(metafunc.config)
    if not plan:
        metafunc.parametrize(
            "verdict",
            [
                pytest.param(
                    None, marks=pytest.mark.skip(reason="no run to judge: pass --run-dir DIR or --profile NAME")
                )
            ],
            ids=["no-run"],
            indirect=True,
        )
        return
    planned = [v for v in _planned(plan) if v.criterion == criterion]
    if not planned:
        metafunc.parametrize(
            "verdict",
            [pytest.param(None, marks=pytest.mark.skip(reason=f"the thresholds define no {criterion} criterion"))],
            ids=["not-configured"],
            indirect=True,
        )
        return
    metafunc.parametrize("verdict", [(criterion, v.id) for v in planned], ids=[v.id for v in planned], indirect=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    report = _STATE.get("report")
    if report:
        run_dir = _STATE["plan"]["run_dir"]  # type: ignore[index]
        terminalreporter.write_sep("=", f"harness gate: {report['verdict']}")
        terminalreporter.write_line(f"run: {run_dir}  report: {Path(run_dir) / 'report.html'}")
