"""The distribution: `python -m build` gives a wheel and an sdist that `twine check` passes, the wheel carries the
profiles, the report templates and the pytest plugin; installed alone into a fresh venv outside the repository, its
plugin judges a run with the same tests and outcomes as `pytest suites --run-dir RUN` in the repository.

The fresh venv reuses this venv's dependencies (torch...) through a .pth file naming a folder of links to them, less
this project's own install (the editable finder, its dist-info), and gets only the built wheel, with --no-deps."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.test_plugin import outcomes, tiny_run

REPO = Path(__file__).resolve().parents[1]
DIST = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
NORMALIZED = re.sub(r"[-_.]+", "_", DIST).lower()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The wheel and sdist, built from a copy of the sources (nothing is written into the checkout)."""
    root = tmp_path_factory.mktemp("dist")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "harness", src / "harness", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = root / "out"
    cmd = [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "deprecat" not in (proc.stdout + proc.stderr).lower(), proc.stderr[-3000:]
    return out


def _wheel(built: Path) -> Path:
    [wheel] = built.glob("*.whl")
    return wheel


def test_the_wheel_carries_the_profiles_templates_and_the_plugin(built):
    wheel = _wheel(built)
    assert wheel.name.startswith(f"{NORMALIZED}-") and NORMALIZED != "harness"  # that PyPI name is someone else's
    names = set(zipfile.ZipFile(wheel).namelist())
    here = {p.relative_to(REPO).as_posix() for p in (REPO / "harness").rglob("*") if p.is_file()}
    wanted = {p for p in here if p.endswith((".py", ".toml", ".html")) and "__pycache__" not in p}
    assert wanted - names == set()  # every module, profile and template
    assert {"harness/pytest_plugin.py", "harness/gate_tests.py", "harness/profiles/cpu.toml"} <= names
    assert "harness/report/templates/_model_cards.html" in names
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(info).decode()
    assert (
        "[pytest11]\nharness = harness.pytest_plugin" in entry_points and "harness = harness.cli:main" in entry_points
    )
    meta = zipfile.ZipFile(wheel).read(info.replace("entry_points.txt", "METADATA")).decode()
    assert f"Name: {DIST}" in meta and "Provides-Extra: mlflow" in meta
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, built.iterdir())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and check.stdout.count("PASSED") == 2, check.stdout + check.stderr


def _ours(name: str) -> bool:
    """An entry of site-packages that is this project's install (editable finder, .pth, dist-info, package)."""
    low = name.lower()
    return low == "harness" or NORMALIZED in low.replace("-", "_") or low.startswith(("harness-", "harness_"))


def fresh_venv(root: Path, wheel: Path) -> Path:
    """A venv outside the repository with only `wheel` installed (--no-deps) and this venv's dependencies reachable
    through a .pth file; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    deps = root / "deps"
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        if not _ours(entry.name):
            (deps / entry.name).symlink_to(entry)
    (site / "_ci_dependencies.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    proc = subprocess.run([*install, str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return python


def test_the_installed_wheels_plugin_judges_a_run_as_suites_does(built, tmp_path):
    python = fresh_venv(tmp_path, _wheel(built))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    project = tmp_path / "project"  # a project of the user's own, with no test of its own
    project.mkdir()
    where = subprocess.run(
        [python, "-c", "import harness, harness.pytest_plugin as p; print(harness.__file__); print(p.__file__)"],
        capture_output=True,
        text=True,
        cwd=project,
        env=env,
        check=True,
    ).stdout.split()
    installed = tmp_path / "venv" / "lib"
    assert all(Path(w).is_relative_to(installed) for w in where), where  # the wheel's harness, not the checkout's
    # a run whose gated model fails one criterion and whose ablation is reported: failed, passed, skipped, xfailed
    run = tiny_run(tmp_path / "run", soft_k=14, strict_k=12, ablations={"scratch-all": True})
    gate = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "-v", "--harness-run-dir", str(run), "--junitxml=gate.xml"],
        capture_output=True,
        text=True,
        cwd=project,
        env=env,
        timeout=600,
    )
    suites = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_gate.py", "-p", "no:cacheprovider", "-v", "--run-dir", str(run)]
        + [f"--junitxml={tmp_path / 'suites.xml'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert gate.returncode == suites.returncode == 1, gate.stdout[-3000:] + suites.stdout[-3000:]
    got, expected = outcomes(project / "gate.xml"), outcomes(tmp_path / "suites.xml")
    assert got == expected and set(got.values()) == {"passed", "failure", "skipped", "xfailed"}, (got, expected)
    assert got["test_accuracy[vgg16-imagenet-all-test_difficult]"] == "failure"
    assert f"harness 0.1.0 from {Path(where[0]).parent}" in gate.stdout
    assert "harness gate: FAIL" in gate.stdout and str(REPO) not in gate.stdout
