"""onnxruntime sessions: provider choice, session creation with clear errors, input checks, latency.

Provider policy. onnxruntime-gpu lists CUDA (and TensorRT) in `get_available_providers()` whether or not a GPU
exists; asking for CUDA on a machine without one makes onnxruntime log provider-library errors and silently fall
back to CPU. So usability is decided first (torch sees a CUDA device), and only then are GPU providers requested:

- ``auto``: CUDA then CPU when a GPU is usable, otherwise CPU only (nothing is printed on CPU machines);
- ``cpu``: CPU only;
- ``cuda``: CUDA then CPU; an error if no GPU is usable;
- ``tensorrt``: TensorRT, CUDA, CPU; an error if no GPU is usable.

The providers a session really uses (``session.get_providers()``) are what gets recorded, never the request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
REQUESTS = ("auto", "cpu", "cuda", "tensorrt")

# onnxruntime log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. Warnings on a healthy session are
# noise (e.g. "some nodes were not assigned to the preferred provider"); real failures still raise.
ORT_LOG_SEVERITY = 3
# intra-op threads of every session this process creates without an explicit count (None: onnxruntime's default,
# one per core); an executor's job sets it to its CPU share
_DEFAULT_THREADS: int | None = None


def set_default_threads(n: int | None) -> None:
    global _DEFAULT_THREADS
    _DEFAULT_THREADS = int(n) if n else None


class RuntimeSetupError(ValueError):
    """A provider was asked for that this machine cannot give."""


class ModelLoadError(ValueError):
    """An ONNX model file cannot be turned into a session; the message names the file."""


class InputShapeError(ValueError):
    """The model's input or output shape disagrees with the data/classes it is asked to process."""


@lru_cache(maxsize=1)
def gpu_usable() -> bool:
    """True when a CUDA device can really be used (torch can see one); quiet on CPU-only machines.

    torch, imported with this module, also loads the CUDA/cuDNN libraries that onnxruntime-gpu's CUDA provider links
    against.
    """
    try:
        return bool(torch.cuda.is_available() and torch.cuda.device_count() > 0)
    except Exception:  # a broken driver install counts as "no GPU"
        return False


def _ort():
    ort.set_default_logger_severity(ORT_LOG_SEVERITY)
    return ort


def select_providers(request: str = "auto") -> list[str]:
    """The ordered onnxruntime provider list for a request (see the module docstring)."""
    request = (request or "auto").lower()
    if request not in REQUESTS:
        raise RuntimeSetupError(f"unknown provider {request!r}; choose one of {REQUESTS}")
    if request == "cpu":
        return [CPU]
    available = set(_ort().get_available_providers())
    usable = gpu_usable()
    if request == "auto":
        return [CUDA, CPU] if usable and CUDA in available else [CPU]
    wanted = CUDA if request == "cuda" else TENSORRT
    if not usable:
        raise RuntimeSetupError(
            f"provider {request!r} asked for, but no usable GPU is visible (torch.cuda.is_available() "
            f"is False); use --provider auto or cpu"
        )
    if wanted not in available:
        raise RuntimeSetupError(
            f"provider {request!r} asked for, but this onnxruntime build offers only {sorted(available)}"
        )
    return [TENSORRT, CUDA, CPU] if request == "tensorrt" else [CUDA, CPU]


def create_session(
    path: Path, providers: Sequence[str] | None = None, threads: int | None = None, foreign: bool = False
):
    """An InferenceSession for `path` on `providers` (default: select_providers('auto')).

    A missing, corrupt or truncated file raises ModelLoadError naming the file; its advice is `harness export`'s for
    a model of a run, and not for a `foreign` one (harness check: a model trained elsewhere, which `harness export`
    cannot remake and which must not be deleted on its say-so). If a GPU provider was asked for but
    the session came up without it (onnxruntime falls back silently), that is an error too: a run must not record
    CUDA numbers that were measured on the CPU.
    """
    ort = _ort()
    path = Path(path)
    providers = list(providers) if providers else select_providers("auto")
    if not path.is_file():
        if foreign:
            raise ModelLoadError(f"{path} does not exist; pass the path of an ONNX model file")
        raise ModelLoadError(f"{path} is missing; run `harness export` for this variant first")
    opts = ort.SessionOptions()
    opts.log_severity_level = ORT_LOG_SEVERITY
    threads = threads or _DEFAULT_THREADS
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises InvalidProtobuf, InvalidGraph, Fail, RuntimeException, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        remedy = (
            "check the path, or convert the model to ONNX again with the tools it was trained with"
            if foreign
            else "delete it and rerun `harness export --force`"
        )
        raise ModelLoadError(
            f"{path}: cannot load the ONNX model ({type(exc).__name__}: {first}); the file is corrupt, "
            f"truncated or not an ONNX model; {remedy}"
        ) from exc
    missing = [p for p in providers if p != CPU and p not in session.get_providers()]
    if missing:
        raise RuntimeSetupError(
            f"{path}: onnxruntime could not start {missing} (session uses {session.get_providers()}); "
            f"check the CUDA/cuDNN/TensorRT libraries or use --provider cpu"
        )
    return session


def input_spec(session) -> dict[str, Any]:
    """Name and shape of the single input and output; symbolic dimensions are their names (str)."""
    inp, out = session.get_inputs(), session.get_outputs()
    return {
        "input": inp[0].name,
        "input_shape": list(inp[0].shape),
        "input_type": inp[0].type,
        "output": out[0].name,
        "output_shape": list(out[0].shape),
    }


def check_io(session, path: Path, image_size: int, num_classes: int | None = None) -> None:
    """The model must take float N x 3 x image_size x image_size and give N x num_classes logits."""
    spec = input_spec(session)
    shape, out = spec["input_shape"], spec["output_shape"]
    expected = [3, image_size, image_size]
    if spec["input_type"] != "tensor(float)":
        raise InputShapeError(
            f"{path}: model input {spec['input']!r} is {spec['input_type']}, expected tensor(float) "
            f"(RGB in [0, 1]); re-export with `harness export --force`"
        )
    if len(shape) != 4 or [d if isinstance(d, int) else None for d in shape[1:]] != expected:
        raise InputShapeError(
            f"{path}: model input {spec['input']!r} has shape {shape}, but the run feeds "
            f"N x {expected[0]} x {expected[1]} x {expected[2]} images (image_size={image_size} in "
            f"config.json); re-export with `harness export --force`"
        )
    if num_classes is not None and (len(out) != 2 or out[1] != num_classes):
        raise InputShapeError(
            f"{path}: model output has shape {out}, expected N x {num_classes} logits for the run's "
            f"{num_classes} classes; re-export with `harness export --force`"
        )


def run_batches(session, x: np.ndarray, batch: int = 8) -> np.ndarray:
    """Logits for float32 N x 3 x H x W input, in batches (exercises the dynamic batch dimension)."""
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: np.ascontiguousarray(x[i : i + batch], dtype=np.float32)})[0]
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(outs, axis=0) if outs else np.zeros((0, 0), np.float32)


def measure_latency(
    session,
    image_size: int,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 10,
    warmup: int = 2,
    seed: int = 0,
    budget_s: float | None = 30.0,
    make_input=None,
) -> dict[str, Any]:
    """Median (and p90) wall time of `repeats` runs per batch size after `warmup` runs; throughput = batch / median.

    On a slow machine (VGG16 at 224 px on 2 CPU cores: seconds per batch of 8) the timed runs of one batch size stop
    once they have taken `budget_s` seconds, after at least 3; the number actually timed is recorded.
    `make_input(batch, rng)` builds the input of a model that does not take float N x 3 x S x S (harness check)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for b in batch_sizes:
        # make_input(b, rng): the batch in the model's own layout and dtype (harness check); default float NCHW
        x = make_input(b, rng) if make_input else rng.random((b, 3, image_size, image_size), dtype=np.float32)
        for _ in range(warmup):
            session.run(None, {name: x})
        times: list[float] = []
        while len(times) < repeats:
            t0 = time.perf_counter()
            session.run(None, {name: x})
            times.append(time.perf_counter() - t0)
            if budget_s is not None and len(times) >= min(3, repeats) and sum(times) > budget_s:
                break
        med = float(np.median(times))
        out[str(b)] = {
            "batch": b,
            "median_ms": med * 1e3,
            "p90_ms": float(np.percentile(times, 90)) * 1e3,
            "min_ms": min(times) * 1e3,
            "throughput_ips": b / med if med > 0 else None,
            "repeats": len(times),
            "warmup": warmup,
        }
    return out
