"""Benchmark settings, machine fingerprint, baseline storage and shared fixtures (loaded for benchmarks/ only).

Benchmarks are not tests: run them by naming this folder (`pytest benchmarks/ ...`); `pytest` alone collects
tests/ only. Timings are noisy, so every benchmark records medians and the inference benchmarks record the
onnxruntime/PyTorch ratio measured in the same session (see README.md here).

Baselines live in benchmarks/baselines/<fingerprint>/ (BENCH_BASELINES moves the root) where the fingerprint hashes
the CPU model, the core count, the GPU name(s) and the torch version: a run on another machine (or with another
torch) finds no baseline and compares against nothing rather than raising false alarms. `--bench-compare` compares
against the latest saved baseline of this fingerprint and fails on regressions beyond `--bench-fail` (default
median:25%) only when such a baseline exists; otherwise it says so and compares nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# Root of the per-fingerprint baselines; BENCH_BASELINES moves it (e.g. to a cache that persists on a CI runner).
BASELINES = Path(os.environ.get("BENCH_BASELINES") or REPO / "benchmarks" / "baselines")
DATA = REPO / "data" / "small-book-images"
DEFAULT_STORAGE = "file://./.benchmarks"  # pytest-benchmark's own default: replaced unless the user set one
DEFAULT_FAIL = "median:25%"
BACKBONES = ("vgg16", "efficientnet_lite0")
# Which built-in profile gives each backbone its image size, batch size, phases and augmentation parameters.
PROFILE_ENV = {"vgg16": ("BENCH_VGG16_PROFILE", "smoke"), "efficientnet_lite0": ("BENCH_LITE0_PROFILE", "cpu")}


# --- options ---------------------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("harness benchmarks")
    g.addoption(
        "--bench-vgg16-profile",
        default=os.environ.get(*PROFILE_ENV["vgg16"]),
        help="profile whose image/batch size, phases and augmentation VGG16 benchmarks use "
        "(env BENCH_VGG16_PROFILE; default smoke = 64 px; full = 224 px)",
    )
    g.addoption(
        "--bench-lite0-profile",
        default=os.environ.get(*PROFILE_ENV["efficientnet_lite0"]),
        help="profile for efficientnet_lite0 benchmarks (env BENCH_LITE0_PROFILE; default cpu = 224 px)",
    )
    g.addoption(
        "--bench-image-size",
        type=int,
        default=int(os.environ.get("BENCH_IMAGE_SIZE", "0")) or None,
        help="force one image size for every benchmark (env BENCH_IMAGE_SIZE), e.g. 64 for a quick pass",
    )
    g.addoption(
        "--bench-backbones",
        default=os.environ.get("BENCH_BACKBONES", ",".join(BACKBONES)),
        help="comma-separated backbones (env BENCH_BACKBONES; default both)",
    )
    g.addoption(
        "--bench-providers",
        default=os.environ.get("BENCH_PROVIDERS", "auto"),
        help="onnxruntime providers to benchmark: auto (cpu, plus cuda when a GPU is usable) or a list "
        "such as cpu,cuda,tensorrt (env BENCH_PROVIDERS)",
    )
    g.addoption(
        "--bench-budget",
        type=float,
        default=float(os.environ.get("BENCH_BUDGET_S", "3")),
        help="seconds of timed rounds per benchmark; rounds = budget / one call, clamped to "
        "[--bench-min-rounds, --bench-max-rounds] (env BENCH_BUDGET_S, default 3)",
    )
    g.addoption("--bench-min-rounds", type=int, default=int(os.environ.get("BENCH_MIN_ROUNDS", "5")))
    g.addoption("--bench-max-rounds", type=int, default=int(os.environ.get("BENCH_MAX_ROUNDS", "200")))
    g.addoption(
        "--bench-compare",
        action="store_true",
        help="compare against the latest baseline saved for this machine's fingerprint and fail on "
        "regressions beyond --bench-fail; does nothing (and says so) when there is no such baseline",
    )
    g.addoption(
        "--bench-fail",
        action="append",
        default=[],
        help=f"regression threshold(s) for --bench-compare, pytest-benchmark syntax (default {DEFAULT_FAIL})",
    )


# --- fingerprint and storage -----------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_names() -> str:
    import torch

    if not torch.cuda.is_available():
        return "none"
    return ";".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


@lru_cache(maxsize=1)
def machine_fingerprint() -> dict[str, str]:
    """What makes timings comparable: CPU model, core count, GPU name(s), torch version -> a 12-hex-digit key."""
    import torch

    parts = {
        "cpu_model": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "gpu": _gpu_names(),
        "torch": torch.__version__,
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    return {"fingerprint": key, **parts}


def _saved_runs(storage_dir: Path) -> list[Path]:
    from pytest_benchmark.utils import get_machine_id

    return sorted((storage_dir / get_machine_id()).glob("[0-9][0-9][0-9][0-9]_*.json"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # pytest-benchmark builds its session in a trylast pytest_configure, so options changed here take effect.
    if not hasattr(config.option, "benchmark_storage"):
        return  # pytest-benchmark not installed or disabled (-p no:benchmark)
    fp = machine_fingerprint()
    storage_dir = BASELINES / fp["fingerprint"]
    if config.option.benchmark_storage == DEFAULT_STORAGE:
        config.option.benchmark_storage = f"file://{storage_dir}"
    else:
        raw = config.option.benchmark_storage
        storage_dir = Path(raw[len("file://") :] if raw.startswith("file://") else raw)
    config._bench_notes = [
        f"machine fingerprint {fp['fingerprint']} ({fp['cpu_model']}, {fp['cpu_count']} cores, "
        f"GPU {fp['gpu']}, torch {fp['torch']}); storage {config.option.benchmark_storage}"
    ]
    if config.option.benchmark_save or config.option.benchmark_autosave:
        storage_dir.mkdir(parents=True, exist_ok=True)
        (storage_dir / "MACHINE.json").write_text(json.dumps(fp, indent=2) + "\n", encoding="utf-8")
    if config.option.benchmark_disable:
        config._bench_notes.append("--benchmark-disable: every benchmark runs once, nothing is timed or compared")
    elif config.getoption("bench_compare"):
        runs = _saved_runs(storage_dir)
        if runs:
            from pytest_benchmark.utils import parse_compare_fail

            if not config.option.benchmark_compare:
                config.option.benchmark_compare = True  # the latest saved run of this fingerprint
            exprs = config.getoption("bench_fail") or [DEFAULT_FAIL]
            if not config.option.benchmark_compare_fail:
                config.option.benchmark_compare_fail = [parse_compare_fail(e) for e in exprs]
            else:
                exprs = ["as given by --benchmark-compare-fail"]
            config._bench_notes.append(
                f"comparing against the latest baseline of this fingerprint ({runs[-1].name}); "
                f"fail on {', '.join(exprs)}"
            )
        else:
            config._bench_notes.append(
                f"no baseline for fingerprint {fp['fingerprint']} in {storage_dir}: nothing "
                f"compared (save one with --benchmark-save=baseline)"
            )


def pytest_report_header(config: pytest.Config) -> list[str]:
    return list(getattr(config, "_bench_notes", []))


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["harness_fingerprint"] = machine_fingerprint()


# --- parametrization -------------------------------------------------------------------------------------------------


def bench_profile(config: pytest.Config, backbone: str):
    """The profile a backbone is benchmarked with (built-in profile, backbone and optional image size forced)."""
    from harness.config import load_profile

    name = config.getoption("bench_vgg16_profile" if backbone == "vgg16" else "bench_lite0_profile")
    size = config.getoption("bench_image_size")
    return load_profile(name, [f"backbone={backbone}"] + ([f"image_size={size}"] if size else []))


def bench_backbones(config: pytest.Config) -> list[str]:
    names = [b.strip() for b in config.getoption("bench_backbones").split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKBONES]
    if unknown:
        raise pytest.UsageError(f"--bench-backbones: unknown {unknown}; known {list(BACKBONES)}")
    return names


def torch_devices() -> list[str]:
    from harness.runtime import gpu_usable

    return ["cpu", "cuda"] if gpu_usable() else ["cpu"]


def ort_providers(config: pytest.Config) -> list[str]:
    """Provider requests (harness.runtime names) to benchmark: auto = cpu, plus cuda where a GPU is usable."""
    from harness.runtime import REQUESTS, gpu_usable

    raw = config.getoption("bench_providers").strip().lower()
    if raw == "auto":
        return ["cpu", "cuda"] if gpu_usable() else ["cpu"]
    names = [p.strip() for p in raw.split(",") if p.strip()]
    bad = [p for p in names if p not in REQUESTS or p == "auto"]
    if bad:
        raise pytest.UsageError(f"--bench-providers: unknown {bad}; use cpu, cuda, tensorrt or auto")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    if "infer_case" in metafunc.fixturenames:
        # torch before onnxruntime for each (backbone, size, batch, provider): the ratio is taken right after both ran
        cases = []
        for bb in bench_backbones(config):
            size = bench_profile(config, bb).image_size
            for batch in (1, 8):
                for prov in ort_providers(config):
                    for engine in ("torch", "onnxruntime"):
                        cases.append(
                            pytest.param((bb, size, batch, prov, engine), id=f"{bb}-{size}px-b{batch}-{prov}-{engine}")
                        )
        metafunc.parametrize("infer_case", cases)
    if "model_case" in metafunc.fixturenames:  # (backbone, profile) for train / augment / cam benchmarks
        cases = []
        for bb in bench_backbones(config):
            p = bench_profile(config, bb)
            cases.append(pytest.param((bb, p), id=f"{bb}-{p.name}-{p.image_size}px"))
        metafunc.parametrize("model_case", cases)
    if "train_case" in metafunc.fixturenames:  # every distinct training phase of the profile, per backbone
        cases = []
        for bb in bench_backbones(config):
            p = bench_profile(config, bb)
            for init in p.inits:
                for phase in p.phases[init]:
                    # a probe phase (LP-FT) takes no gradient step: it is one pass of feature extraction and a
                    # scikit-learn fit (harness.probe_head), timed by test_probe_phase, not by test_train_step
                    if phase.epochs > 0 and phase.optimizer != "probe":
                        tag = f"{bb}-{p.name}-{p.image_size}px-b{p.batch_size}-{init}-{phase.name}"
                        cases.append(pytest.param((bb, p, init, phase), id=tag))
        metafunc.parametrize("train_case", cases)
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", torch_devices())


# --- timing helpers --------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    """GPU work is asynchronous: a timed function must wait for it to finish."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Timer:
    """Time `fn` under pytest-benchmark, rounds adapted to its speed; returns the median (None when disabled)."""

    def __init__(self, config: pytest.Config):
        self.budget = config.getoption("bench_budget")
        self.min_rounds = config.getoption("bench_min_rounds")
        self.max_rounds = config.getoption("bench_max_rounds")

    def __call__(self, benchmark, fn: Callable[[], Any], warmup: int = 1) -> float | None:
        if not benchmark.enabled:
            benchmark.pedantic(fn, rounds=1)  # --benchmark-disable: one call proves the path runs
            return None
        t0 = time.perf_counter()
        for _ in range(max(warmup, 1)):  # first calls allocate, autotune, build TensorRT engines...
            fn()
        one = (time.perf_counter() - t0) / max(warmup, 1)
        rounds = min(max(math.ceil(self.budget / max(one, 1e-6)), self.min_rounds), self.max_rounds)
        benchmark.pedantic(fn, rounds=rounds, warmup_rounds=0, iterations=1)
        benchmark.extra_info["rounds"] = rounds
        stats = benchmark.stats.stats
        benchmark.extra_info["median_s"] = stats.median
        return stats.median


@pytest.fixture(scope="session")
def sync_device() -> Callable[[str], None]:
    return sync


@pytest.fixture(scope="session")
def profile_of(pytestconfig: pytest.Config):
    """backbone -> the Profile it is benchmarked with."""
    return lambda backbone: bench_profile(pytestconfig, backbone)


@pytest.fixture(scope="session")
def timer(pytestconfig: pytest.Config) -> Timer:
    return Timer(pytestconfig)


# --- shared inputs ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def train_set():
    from harness.data import load_train

    return load_train(DATA)


@pytest.fixture(scope="session")
def difficult_set(train_set):
    from harness.data import load_test

    return load_test(DATA, "test_difficult", train_set.classes)


@pytest.fixture(scope="session")
def prepared(train_set):
    """Profile -> TrainData (the training split resized once to the profile's size, as harness.train does)."""
    from harness.train import prepare_data

    cache: dict[tuple, Any] = {}

    def get(profile):
        key = (profile.image_size, profile.val_fraction, profile.split_seed, profile.oversample)
        if key not in cache:
            cache[key] = prepare_data(train_set, profile)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def make_model(train_set):
    """Fresh (scratch-initialised, seed 0) classifier for a backbone: timings do not depend on the weights' values."""
    import torch

    from harness.backbones import build_classifier

    def make(backbone: str, profile):
        torch.manual_seed(0)
        return build_classifier(backbone, "scratch", len(train_set.classes), profile.hidden, profile.dropout)

    return make


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory, make_model):
    """(backbone, image size) -> (eval torch model on CPU, path of its ONNX export with the default exporter)."""
    import onnx

    from harness.export import to_onnx

    cache: dict[tuple[str, int], tuple[Any, Path, float]] = {}

    def get(backbone: str, profile):
        key = (backbone, profile.image_size)
        if key not in cache:
            model = make_model(backbone, profile).eval()
            t0 = time.perf_counter()
            proto = to_onnx(model, profile.image_size)
            seconds = time.perf_counter() - t0
            path = tmp_path_factory.mktemp("onnx") / f"{backbone}-{profile.image_size}.onnx"
            onnx.save_model(proto, str(path))
            cache[key] = (model, path, seconds)
        return cache[key]

    return get


# --- onnxruntime / PyTorch ratios ------------------------------------------------------------------------------------


class Ratios:
    """Medians of both engines per (backbone, size, batch, provider); the ratio is stored once both are known."""

    def __init__(self):
        self.medians: dict[tuple, dict[str, float]] = {}

    def record(self, key: tuple, engine: str, median: float | None, extra_info: dict[str, Any]) -> None:
        if median is None:
            return
        pair = self.medians.setdefault(key, {})
        pair[engine] = median
        if "torch" in pair and "onnxruntime" in pair:
            extra_info["torch_median_s"] = pair["torch"]
            extra_info["onnxruntime_median_s"] = pair["onnxruntime"]
            extra_info["ratio_torch_over_onnxruntime"] = pair["torch"] / pair["onnxruntime"]


_RATIOS = Ratios()
_SPEEDUPS: list[dict[str, Any]] = []  # test_speedups.py's rows: one per (backbone, device, path)


@pytest.fixture(scope="session")
def ratios() -> Ratios:
    return _RATIOS


@pytest.fixture(scope="session")
def speedups() -> list[dict[str, Any]]:
    return _SPEEDUPS


def _speedup_table(tr) -> None:
    tr.section("training speed-ups (test_speedups.py: paths alternated in one process; ratio > 1: faster)")
    tr.write_line(
        f"{'backbone':20} {'device':6} {'px':>4} {'batch':>5} {'path':20} {'img/s':>7} {'ratio':>6}  vs / decision"
    )
    for r in _SPEEDUPS:
        decision = (
            f"vs {r['reference']}; registry channels_last={r['channels_last']}, cpu bf16 from {r['bf16_from']} px; "
            f"auto -> {r['auto']}"
        )
        tr.write_line(
            f"{r['backbone']:20} {r['device']:6} {r['size']:>4} {r['batch']:>5} {r['path']:20} "
            f"{r['images_per_s']:>7.2f} {r['ratio']:>6.2f}  {decision} ({r['rounds']} rounds)"
        )


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    tr = terminalreporter
    notes = getattr(config, "_bench_notes", [])
    if notes:  # also in the header, which -q hides
        tr.section("harness benchmarks")
        for line in notes:
            tr.write_line(line)
    if _SPEEDUPS:
        _speedup_table(tr)
    rows = [(k, v) for k, v in _RATIOS.medians.items() if "torch" in v and "onnxruntime" in v]
    if not rows:
        return
    tr.section("onnxruntime vs PyTorch (medians of the same session; ratio > 1: onnxruntime faster)")
    tr.write_line(f"{'backbone':20} {'px':>4} {'batch':>5} {'provider':9} {'torch ms':>10} {'ort ms':>10} {'ratio':>6}")
    for (bb, size, batch, prov), v in rows:
        tr.write_line(
            f"{bb:20} {size:>4} {batch:>5} {prov:9} {v['torch'] * 1e3:>10.2f} "
            f"{v['onnxruntime'] * 1e3:>10.2f} {v['torch'] / v['onnxruntime']:>6.2f}"
        )
