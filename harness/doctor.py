"""`harness doctor`: is this machine ready for the harness? One line per check, OK / WARN / FAIL, each problem with
a one-line fix.

Rules (exit 1 when any line is FAIL, else 0; WARN never changes the exit code):
- FAIL: something every command needs is broken: Python outside the project's `requires-python`; torch or
  torchvision not importable or not the pinned version (published figures and export parity are pinned on them);
  onnxruntime not importable or without CPUExecutionProvider (export parity and evaluate run on it); timm or onnx not
  importable (the efficientnet_lite0 backbone, the export checker); Chromium missing when $CI is set (the report
  render test fails there instead of skipping).
- WARN: something only some commands need, or a version outside the declared range that probably still works:
  timm / onnx / onnxruntime outside pyproject's range; a GPU torch sees while onnxruntime has no CUDA provider;
  more torch threads than usable CPUs; a backbone's ImageNet weights missing or damaged (only `imagenet` variants
  need them); Chromium missing (the report render test is skipped); the bundled dataset not found (pass --data).
- OK: everything else, including "no GPU": a CPU-only machine is a fact, not a problem.
Each check runs on its own: an exception inside one becomes its FAIL line, never a crash of the doctor; torch is
imported inside the checks (harness.weights: at import, its failure kept for the weights line), so the doctor runs
(and says so) where torch cannot be imported.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import harness

# harness.weights needs torch; the doctor must run where torch cannot be imported, so the failure is kept and raised
# by check_weights, whose line then says why (the other checks import what they check through _import).
_WEIGHTS_IMPORT_ERROR: Exception | None = None
try:
    from harness.weights import weights_statuses
except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install raising anything at import
    _WEIGHTS_IMPORT_ERROR = exc

OK, WARN, FAIL = "OK", "WARN", "FAIL"

# Kept equal to pyproject.toml's [project] requires-python and dependencies (a test compares them).
PYTHON_RANGE = ((3, 11), (3, 13))  # min inclusive, max exclusive
PINNED = {"torch": "2.14.1", "torchvision": "0.29.1"}
RANGES = {"timm": ("1.0.9", "1.1"), "onnx": ("1.17", "1.24"), "onnxruntime": ("1.20", "1.32")}
OPTIONAL = {"ray": ("2.40", "3")}  # extras: [project.optional-dependencies] ray

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")  # as tests/test_report_html.py looks for them
CHROMIUM_FALLBACK = Path("/usr/bin/chromium")
BUNDLED_DATA = Path("data") / "small-book-images"


@dataclass(frozen=True)
class Check:
    """One line of the doctor: its status, what it is about, what was found and, for WARN / FAIL, the fix."""

    status: str  # OK | WARN | FAIL
    name: str
    detail: str
    fix: str = ""


def _version_tuple(text: str) -> tuple[int, ...]:
    """'2.14.1+cu130' -> (2, 14, 1); '1.0.9rc1' -> (1, 0, 9): the leading release numbers only."""
    out = []
    for part in text.split("+")[0].split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if len(digits) < len(part):
            break
    return tuple(out)


def _torch_missing(exc: BaseException) -> bool:
    return isinstance(exc, ImportError) and exc.name == "torch"


def _import(name: str) -> ModuleType:
    return importlib.import_module(name)


def _cuda_build() -> str:
    torch = _import("torch")
    return f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"


def check_python() -> list[Check]:
    v = sys.version_info[:3]
    lo, hi = PYTHON_RANGE
    text = f"{'.'.join(map(str, v))} ({sys.executable})"
    if lo <= v[:2] < hi:
        return [Check(OK, "python", text)]
    return [
        Check(
            FAIL,
            "python",
            f"{text} is outside the supported >={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}",
            f"create the venv with Python {lo[0]}.{lo[1]}: python{lo[0]}.{lo[1]} -m venv .venv && "
            f".venv/bin/pip install -e '.[test]'",
        )
    ]


def check_pinned(module: str) -> list[Check]:
    pin = PINNED[module]
    fix = f"pip install torch=={PINNED['torch']} torchvision=={PINNED['torchvision']}"
    try:
        version = str(_import(module).__version__)
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install raising anything at import
        return [Check(FAIL, module, f"not importable ({type(exc).__name__}: {exc})", fix)]
    if _version_tuple(version) != _version_tuple(pin):
        return [Check(FAIL, module, f"{version} installed, the harness is pinned on {pin}", fix)]
    extra = f" ({_cuda_build()})" if module == "torch" else ""
    return [Check(OK, module, version + extra)]


def _in_range(module: str, version: str) -> Check | None:
    lo, hi = RANGES[module]
    if _version_tuple(lo) <= _version_tuple(version) < _version_tuple(hi):
        return None
    dist = "onnxruntime-gpu" if module == "onnxruntime" and sys.platform == "linux" else module
    return Check(WARN, module, f"{version} is outside the declared >={lo},<{hi}", f"pip install '{dist}>={lo},<{hi}'")


def check_module(module: str, needed_for: str) -> list[Check]:
    """timm / onnx: FAIL when not importable, WARN outside the declared range."""
    try:
        version = str(_import(module).__version__)
    except Exception as exc:  # noqa: BLE001
        lo, hi = RANGES[module]
        fix = (
            "install torch first (see the torch line)" if _torch_missing(exc) else f"pip install '{module}>={lo},<{hi}'"
        )
        return [Check(FAIL, module, f"not importable ({type(exc).__name__}: {exc}); needed for {needed_for}", fix)]
    return [_in_range(module, version) or Check(OK, module, version)]


def check_ray() -> list[Check]:
    """Ray is optional (`--executor ray`): absent is OK (said so), outside the declared range a WARN."""
    lo, hi = OPTIONAL["ray"]
    try:
        version = str(_import("ray").__version__)
    except ImportError:
        return [Check(OK, "ray", "not installed (optional: only --executor ray needs it; pip install 'harness[ray]')")]
    except Exception as exc:  # noqa: BLE001  a broken install
        return [
            Check(
                WARN,
                "ray",
                f"installed but not importable ({type(exc).__name__}: {exc})",
                f"pip install 'ray>={lo},<{hi}'",
            )
        ]
    if not _version_tuple(lo) <= _version_tuple(version) < _version_tuple(hi):
        return [Check(WARN, "ray", f"{version} is outside the declared >={lo},<{hi}", f"pip install 'ray>={lo},<{hi}'")]
    return [Check(OK, "ray", f"{version} (--executor ray)")]


def check_onnxruntime() -> list[Check]:
    lo, hi = RANGES["onnxruntime"]
    dist = "onnxruntime-gpu" if sys.platform == "linux" else "onnxruntime"
    try:
        ort = _import("onnxruntime")
        version = str(ort.__version__)
        providers = list(ort.get_available_providers())
    except Exception as exc:  # noqa: BLE001
        return [
            Check(
                FAIL,
                "onnxruntime",
                f"not importable ({type(exc).__name__}: {exc})",
                f"pip install '{dist}>={lo},<{hi}'",
            )
        ]
    checks = [_in_range("onnxruntime", version) or Check(OK, "onnxruntime", version)]
    text = ", ".join(providers) or "none"
    if "CPUExecutionProvider" not in providers:
        checks.append(
            Check(
                FAIL,
                "onnxruntime providers",
                f"{text}: no CPUExecutionProvider (export parity and evaluate run on it)",
                f"pip install --force-reinstall '{dist}>={lo},<{hi}'",
            )
        )
    else:
        checks.append(Check(OK, "onnxruntime providers", text))
    return checks


def check_gpu() -> list[Check]:
    torch = _import("torch")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
        checks = [Check(OK, "gpu", f"{n} device(s): {names} (torch {_cuda_build()})")]
        try:
            providers = _import("onnxruntime").get_available_providers()
        except Exception:  # noqa: BLE001 - reported by check_onnxruntime
            return checks
        if "CUDAExecutionProvider" not in providers:
            checks.append(
                Check(
                    WARN,
                    "gpu onnxruntime",
                    "torch sees a GPU but onnxruntime has no "
                    "CUDAExecutionProvider: evaluate measures GPU latency on the CPU",
                    "pip install onnxruntime-gpu (in place of onnxruntime)",
                )
            )
        return checks
    if not torch.version.cuda:
        why = "this torch is a CPU-only build"
    elif os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        why = f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} hides every device"
    else:
        try:
            torch.cuda.init()
            why = "torch.cuda.init() raised nothing, yet no device is usable"
        except Exception as exc:  # noqa: BLE001 - its message is the reason ("Found no NVIDIA driver ...")
            why = str(exc).split(". ")[0].splitlines()[0].rstrip(".") if str(exc) else type(exc).__name__
    return [Check(OK, "gpu", f"no GPU: torch.cuda.is_available() is False ({why}); everything runs on the CPU")]


def check_threads() -> list[Check]:
    torch = _import("torch")
    threads = torch.get_num_threads()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    text = f"torch threads {threads}, usable CPUs {usable}, os.cpu_count() {os.cpu_count()}"
    if threads > usable:
        return [
            Check(
                WARN,
                "threads",
                f"{text}: more threads than CPUs slows training down",
                f"export OMP_NUM_THREADS={usable}",
            )
        ]
    return [Check(OK, "threads", text)]


def check_weights() -> list[Check]:
    if _WEIGHTS_IMPORT_ERROR is not None:  # torch missing: "not checked: torch is not importable" (see _guarded)
        raise _WEIGHTS_IMPORT_ERROR
    checks = []
    for st in weights_statuses():
        name = f"weights {st.source.backbone}"
        if st.present:
            checks.append(Check(OK, name, f"{st.found} ({(st.size_bytes or 0) / 2**20:.0f} MiB)"))
        else:
            missing = not Path(st.source.looked_for).exists()  # then the preflight's long message says no more
            detail = f"{st.source.file_name} not found at {st.source.looked_for}" if missing else st.problem
            checks.append(Check(WARN, name, f"{detail} (only `imagenet` variants need it)", st.source.fix))
    return checks


def chromium_binary() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return str(CHROMIUM_FALLBACK) if CHROMIUM_FALLBACK.exists() else None


def check_chromium() -> list[Check]:
    binary = chromium_binary()
    status = FAIL if os.environ.get("CI") else WARN
    fix = "apt-get install -y chromium"
    if binary is None:
        return [
            Check(
                status,
                "chromium",
                f"none of {', '.join(CHROMIUM_NAMES)} on PATH: the headless report render "
                f"test {'fails under CI' if status == FAIL else 'is skipped'}",
                fix,
            )
        ]
    try:
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check(status, "chromium", f"{binary} does not run ({type(exc).__name__}: {exc})", fix)]
    version = next((line for line in proc.stdout.splitlines() if "chrom" in line.lower()), "").strip()
    if proc.returncode != 0 or not version:
        return [
            Check(
                status,
                "chromium",
                f"{binary} --version exits {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}",
                fix,
            )
        ]
    return [Check(OK, "chromium", f"{binary}: {version}")]


def _dataset_candidates() -> list[Path]:
    cwd = Path.cwd() / BUNDLED_DATA
    repo = Path(harness.__file__).resolve().parents[1] / BUNDLED_DATA
    return [cwd] if cwd.resolve() == repo.resolve() else [cwd, repo]


def check_dataset() -> list[Check]:
    tried = _dataset_candidates()
    for root in tried:
        if (root / "train").is_dir():
            classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
            tests = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("test"))
            where = "" if root == tried[0] else " (not under the current folder: pass --data if a command misses it)"
            return [
                Check(
                    OK,
                    "dataset",
                    f"{root}: train classes {', '.join(classes) or 'none'}; "
                    f"test sets {', '.join(tests) or 'none'}{where}",
                )
            ]
    return [
        Check(
            WARN,
            "dataset",
            f"bundled dataset not found (looked for {' and '.join(map(str, tried))})",
            "run from the project root (a harness checkout), or pass --data DIR for your own dataset",
        )
    ]


def _guarded(name: str, check: Callable[[], list[Check]]) -> list[Check]:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a failing check is a FAIL line, not a crashed doctor
        if _torch_missing(exc):
            return [
                Check(FAIL, name, "not checked: torch is not importable", "install torch first (see the torch line)")
            ]
        return [
            Check(
                FAIL,
                name,
                f"check failed: {type(exc).__name__}: {exc}",
                "a broken install or a harness bug: pip install -e '.[test]' again, else report this line",
            )
        ]


def run_checks() -> list[Check]:
    """Every check, in a fixed order; never raises."""
    checks = [Check(OK, "harness", f"{harness.__version__} ({Path(harness.__file__).resolve().parent})")]
    steps: list[tuple[str, Callable[[], list[Check]]]] = [
        ("python", check_python),
        ("torch", lambda: check_pinned("torch")),
        ("torchvision", lambda: check_pinned("torchvision")),
        ("onnxruntime", check_onnxruntime),
        ("timm", lambda: check_module("timm", "the efficientnet_lite0 backbone")),
        ("onnx", lambda: check_module("onnx", "export's model checker")),
        ("ray", check_ray),
        ("gpu", check_gpu),
        ("threads", check_threads),
        ("weights", check_weights),
        ("chromium", check_chromium),
        ("dataset", check_dataset),
    ]
    for name, step in steps:
        checks.extend(_guarded(name, step))
    return checks


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == FAIL for c in checks) else 0


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:4} {c.name.ljust(width)}  {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"{'':4} {''.ljust(width)}  fix: {c.fix}")
    fails, warns = sum(c.status == FAIL for c in checks), sum(c.status == WARN for c in checks)
    lines.append(f"doctor: {fails} FAIL, {warns} WARN -> exit {exit_code(checks)}")
    return "\n".join(lines)
