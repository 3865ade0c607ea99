"""ONNX export of trained checkpoints: exporter, graph checks (harness.onnx_contract), checker, metadata and
PyTorch/onnxruntime parity (harness.parity), recorded in export.json.

Exporter choice: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter, onnxscript translation),
opset 18. It is the maintained default of torch 2.14 (the TorchScript exporter emits a DeprecationWarning and is
slated for removal); it exports both registered backbones (torchvision VGG16 and timm tf_efficientnet_lite0, whose
'same' padding is computed from static H/W) with float32 parity near 1e-7; and the batch dimension is declared as a
``torch.export.Dim``, so the export fails loudly instead of silently baking in the example batch if anything in the
model specialises on it. Its cost is export time (seconds to tens of seconds on a small CPU). The TorchScript exporter
stays selectable (``exporter="torchscript"``, opset 17 or 18) as a fallback; whichever ran is recorded in export.json
and in the model's metadata_props.

Contract of model.onnx: input ``input`` float32 N x 3 x S x S, RGB in [0, 1] (normalisation is inside the graph),
N symbolic; output ``logits`` float32 N x C. With ``tta_hflip`` the graph averages the logits of the image and its
horizontal mirror, so the deployed model is what was evaluated.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxscript
import torch
from torch import nn

from harness import artifacts, runtime
from harness.artifacts import sha256_file
from harness.data import Dataset
from harness.onnx_contract import INPUT_NAME, MIN_OPSET, OUTPUT_NAME, ExportError, check_graph, save_proto, set_metadata
from harness.parity import CPU_ATOL, CPU_RTOL, GPU_ATOL, GPU_RTOL, GPU_TIE_MARGIN, parity, torch_logits
from harness.provenance import dataset_fingerprint
from harness.rundir import is_current, read_variant_config, variant_dirs
from harness.testsets import as_arrays, load_test_sets
from harness.train import load_checkpoint

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_EXPORTER = "dynamo"
DEFAULT_OPSET = 18
EXAMPLE_BATCH = 2  # export with a batch > 1 so that nothing can mistake the batch size for a constant

EXPORTER_WHY = {
    "dynamo": "torch.onnx.export(dynamo=True): torch 2.14's maintained default exporter; exports VGG16 and "
    "tf_efficientnet_lite0 ('same' padding) with parity ~1e-7; batch declared as torch.export.Dim so any "
    "specialisation on it fails the export",
    "torchscript": "torch.onnx.export(dynamo=False): legacy TorchScript tracer (deprecated in torch >= 2.9), "
    "kept as a fallback; faster to export",
}


# --- the deployed module ---------------------------------------------------------------------------------------------


class HFlipTTA(nn.Module):
    """Average of the logits of the image and of its horizontal mirror (test-time augmentation)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x) + self.model(torch.flip(x, dims=[3]))) * 0.5


def deployable(model: nn.Module, meta: dict[str, Any]) -> nn.Module:
    """What gets exported and compared: the classifier, wrapped in HFlipTTA when the checkpoint says tta_hflip."""
    module = HFlipTTA(model) if meta.get("tta_hflip") else model
    return module.eval().float().cpu()


# --- export ----------------------------------------------------------------------------------------------------------


def to_onnx(module: nn.Module, image_size: int, exporter: str = DEFAULT_EXPORTER, opset: int = DEFAULT_OPSET):
    """Export `module` to an in-memory onnx.ModelProto with a symbolic batch dimension (nothing touches disk)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {EXPORTERS}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} < {MIN_OPSET}")
    example = torch.rand(EXAMPLE_BATCH, 3, image_size, image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, tracer notes); failures still raise
        if exporter == "dynamo":
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                optimize=True,
                verbose=False,
            )
            assert program is not None  # dynamo=True always returns the ONNXProgram
            return program.model_proto
        buf = io.BytesIO()
        torch.onnx.export(
            module,
            (example,),
            buf,  # type: ignore[arg-type]  # a file-like object is documented as accepted; the stub says path only
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
        return onnx.load_from_string(buf.getvalue())


# --- one variant, one run --------------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def export_inputs(vdir: Path, inputs: Mapping[str, tuple[Any, np.ndarray]]) -> dict[str, Any]:
    """What an export is made from: the checkpoint (sha256) and the test images its parity was measured on."""
    return {
        "model_sha256": sha256_file(Path(vdir) / "model.pt"),
        "test_data": {split: dataset_fingerprint(ds) for split, (ds, _) in inputs.items()},
    }


def export_is_current(vdir: Path, inputs: Mapping[str, Any] | None = None) -> bool:
    """model.onnx exists, export.json says parity passed, the file is the one that passed (sha256), and (when
    `inputs` are given) it was made from these inputs (checkpoint and test images: harness.rundir.is_current)."""
    onnx_path, rec_path = Path(vdir) / "model.onnx", Path(vdir) / "export.json"
    if not (onnx_path.is_file() and rec_path.is_file()):
        return False
    if inputs is not None and not is_current(rec_path, inputs, outputs=(onnx_path,)):
        return False
    try:
        rec = artifacts.read_json(rec_path)
    except (FileNotFoundError, ValueError):
        return False
    if not isinstance(rec, dict):
        return False
    return bool((rec.get("parity") or {}).get("passed")) and rec.get("sha256") == sha256_file(onnx_path)


def export_variant(
    vdir: Path,
    force: bool = False,
    exporter: str = DEFAULT_EXPORTER,
    opset: int | None = None,
    log=None,
    data_root: Path | None = None,
    tests: Mapping[str, Dataset] | None = None,
) -> dict[str, Any]:
    """Export vdir/model.pt to vdir/model.onnx, check it, measure parity, record vdir/export.json; returns the record.

    Skipped (the existing record is returned, with "skipped": true) when the current model.onnx already passed parity,
    unless force. Inputs (checkpoint, config, test sets) are all read before anything is written; the model is
    exported to a temporary file in vdir and renamed into place only after checker and parity passed. `tests`: the
    profile's test sets already decoded by the caller (harness.testsets.load_test_sets), by split; those not among
    them (or every one, without `tests`) are loaded here.
    """
    vdir = Path(vdir)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    onnx_path, rec_path = vdir / "model.onnx", vdir / "export.json"
    if not (vdir / "model.pt").is_file():
        raise FileNotFoundError(f"{vdir / 'model.pt'} is missing; train this variant first (harness train)")
    config, profile = read_variant_config(vdir, data_root)
    classes, size = list(config["classes"]), profile.image_size
    datasets = load_test_sets(config["data_root"], profile.test_sets, classes, size, tests)  # missing: fail early
    inputs = as_arrays(datasets, size)
    made_from = export_inputs(vdir, inputs)
    if not force and export_is_current(vdir, made_from):
        log(f"[{vdir.name}] already exported from this checkpoint, parity passed; skipping ({onnx_path})")
        return {**artifacts.read_json(rec_path), "skipped": True}
    opset = opset or (DEFAULT_OPSET if exporter == "dynamo" else MIN_OPSET)
    model, meta = load_checkpoint(vdir / "model.pt")
    if list(meta["classes"]) != classes or int(meta["image_size"]) != size:
        raise ExportError(
            f"{vdir / 'model.pt'}: checkpoint (classes {meta['classes']}, image_size {meta['image_size']}) "
            f"disagrees with {vdir / 'config.json'} (classes {classes}, image_size {size})"
        )
    module = deployable(model, meta)

    t0 = time.perf_counter()
    fd, tmp_name = tempfile.mkstemp(prefix=".model.onnx.", suffix=".tmp", dir=vdir)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the deployed model should be readable like any other file
    external, committed = None, False
    try:
        try:
            proto = to_onnx(module, size, exporter, opset)
        except Exception as exc:
            other = [e for e in EXPORTERS if e != exporter][0]
            raise ExportError(
                f"{vdir / 'model.pt'}: ONNX export with the {exporter} exporter failed "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                f"try --exporter {other}"
            ) from exc
        t_export = time.perf_counter() - t0
        graph = check_graph(proto, size, len(classes), str(onnx_path))
        exporter_name = f"torch.onnx.export(dynamo={exporter == 'dynamo'})"
        set_metadata(
            proto,
            {
                "harness.classes": classes,
                "harness.image_size": str(size),
                "harness.backbone": meta["backbone"],
                "harness.variant": vdir.name,
                "harness.tta_hflip": json.dumps(bool(meta.get("tta_hflip"))),
                "harness.exporter": exporter_name,
                "harness.opset": str(graph["opset"]),
                "harness.input": "RGB float32 in [0, 1], NCHW, stretched to image_size; normalisation inside the graph",
                "harness.output": "logits N x C in harness.classes order",
            },
        )
        proto.doc_string = f"harness {vdir.name}: {meta['backbone']} classifier over {classes}"
        external = save_proto(proto, tmp, onnx_path.name)
        ir_version = int(proto.ir_version)
        del proto
        t1 = time.perf_counter()
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as exc:
            raise ExportError(f"{onnx_path}: onnx.checker (full_check) rejected the export: {exc}") from exc
        t_check = time.perf_counter() - t1

        t2 = time.perf_counter()
        refs = {split: torch_logits(module, x) for split, (_, x) in inputs.items()}
        par: dict[str, Any] = {"cpu": parity(tmp, module, inputs, [runtime.CPU], CPU_ATOL, CPU_RTOL, references=refs)}
        gpu_providers = runtime.select_providers("auto")
        if runtime.CUDA in gpu_providers:
            par["cuda"] = parity(tmp, module, inputs, gpu_providers, GPU_ATOL, GPU_RTOL, GPU_TIE_MARGIN, refs)
        else:
            par["cuda"] = {"skipped": "no usable GPU on this machine"}
        par["passed"] = bool(par["cpu"]["passed"] and par["cuda"].get("passed", True))
        t_parity = time.perf_counter() - t2

        record = {
            "schema": 1,
            "variant": vdir.name,
            "created": _now(),
            "model": onnx_path.name,
            "inputs": made_from,
            "external_data": external,
            "sha256": sha256_file(tmp),
            "bytes": tmp.stat().st_size,
            "exporter": {
                "name": exporter_name,
                "kind": exporter,
                "why": EXPORTER_WHY[exporter],
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxscript": getattr(onnxscript, "__version__", None),
            },
            "opset": graph["opset"],
            "ir_version": ir_version,
            "input": {
                **graph["input"],
                "dtype": "float32",
                "layout": "NCHW RGB",
                "range": [0.0, 1.0],
                "normalisation": "inside the graph",
            },
            "output": {**graph["output"], "dtype": "float32", "meaning": "logits"},
            "backbone": meta["backbone"],
            "classes": classes,
            "image_size": size,
            "tta_hflip": bool(meta.get("tta_hflip")),
            "dtype": "float32 (no bf16/fp16 in the graph)",
            "checker": {"full_check": True, "passed": True},
            "parity": par,
            "seconds": {"export": t_export, "check": t_check, "parity": t_parity},
        }
        if not par["passed"]:
            artifacts.write_json(rec_path, record)
            raise ExportError(
                f"{onnx_path}: parity failed (cpu max_abs {par['cpu']['max_abs']:.3g}, max_rel "
                f"{par['cpu']['max_rel']:.3g}; details in {rec_path}); the new model.onnx was not installed"
            )
        os.replace(tmp, onnx_path)
        committed = True
        if external is None:
            (vdir / f"{onnx_path.name}.data").unlink(missing_ok=True)  # a stale external-data file of an older export
        artifacts.write_json(rec_path, record)
        log(
            f"[{vdir.name}] {onnx_path} ({record['bytes'] / 1e6:.1f} MB, {exporter_name}, opset {graph['opset']}); "
            f"parity cpu max_abs {par['cpu']['max_abs']:.2e} max_rel {par['cpu']['max_rel']:.2e}"
        )
        return record
    finally:
        tmp.unlink(missing_ok=True)
        if external and not committed:
            (vdir / external).unlink(missing_ok=True)


def export_run(
    run_dir: Path,
    force: bool = False,
    exporter: str = DEFAULT_EXPORTER,
    opset: int | None = None,
    log=None,
    data_root: Path | None = None,
) -> list[dict[str, Any]]:
    """export_variant for every trained variant of the run."""
    return [export_variant(v, force, exporter, opset, log, data_root) for v in variant_dirs(run_dir)]
