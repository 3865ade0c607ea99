"""ONNX export of trained checkpoints: exporter, graph checks, checker, metadata and PyTorch/onnxruntime parity.

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
horizontal mirror, so the deployed model is what was evaluated. The graph is float32 throughout: bf16 is only ever
used by autocast during GPU training, never in ONNX (checked below).

Parity tiers (every test image of every test set of the profile):
- CPU provider: |ort - torch| <= 1e-4 + 1e-3 * |torch| elementwise, and identical top-1. Required.
- CUDA provider (only where a GPU is usable): |ort - torch| <= 1e-2 + 1e-2 * |torch| (cuDNN algorithm choice and TF32
  convolutions change rounding), and identical top-1 except where the reference's top-2 logit margin is below 2e-2
  (a near tie that such rounding may legitimately flip). Required when run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness import artifacts, runtime

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_EXPORTER = "dynamo"
DEFAULT_OPSET = 18
MIN_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXAMPLE_BATCH = 2  # export with a batch > 1 so that nothing can mistake the batch size for a constant
PARITY_BATCH = 8

CPU_ATOL, CPU_RTOL = 1e-4, 1e-3
GPU_ATOL, GPU_RTOL = 1e-2, 1e-2
GPU_TIE_MARGIN = 2 * GPU_ATOL

# Protobuf caps a single file at 2 GiB; above this the weights go to an external-data file beside model.onnx.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000

EXPORTER_WHY = {
    "dynamo": "torch.onnx.export(dynamo=True): torch 2.14's maintained default exporter; exports VGG16 and "
    "tf_efficientnet_lite0 ('same' padding) with parity ~1e-7; batch declared as torch.export.Dim so any "
    "specialisation on it fails the export",
    "torchscript": "torch.onnx.export(dynamo=False): legacy TorchScript tracer (deprecated in torch >= 2.9), "
    "kept as a fallback; faster to export",
}


class ExportError(ValueError):
    """Export, graph check or parity failed; the message names the file."""


# --- run directory helpers -------------------------------------------------------------------------------------------


def variant_dirs(run_dir: Path) -> list[Path]:
    """The trained variants of a run: its sub-folders holding model.pt, sorted by name."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    found = sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "model.pt").is_file())
    if not found:
        raise FileNotFoundError(f"{run_dir}: no trained variants (no <variant>/model.pt); run `harness train` first")
    return found


def read_variant_config(vdir: Path, data_root: Path | None = None):
    """(config.json as a dict, the recorded Profile); `data_root` replaces the recorded one (a dataset that moved)."""
    from harness.config import profile_from_dict

    config = artifacts.read_json(Path(vdir) / "config.json")
    if not isinstance(config, dict):
        raise ValueError(f"{Path(vdir) / 'config.json'}: not a JSON object; retrain this variant")
    for key in ("data_root", "classes", "profile"):
        if key not in config:
            raise ValueError(f"{Path(vdir) / 'config.json'}: missing key {key!r}; retrain this variant")
    if data_root is not None:
        config = config | {"data_root": str(Path(data_root).resolve())}
    elif not Path(config["data_root"]).is_dir():
        raise FileNotFoundError(
            f"{Path(vdir) / 'config.json'}: the dataset it was trained on, {config['data_root']}, "
            f"is not there any more; pass --data DIR where it is now"
        )
    # a profile that named no test sets (harness train from such a profile) gets the dataset's, as harness run does
    from harness.config import with_test_sets

    return config, with_test_sets(profile_from_dict(config["profile"]), Path(config["data_root"]))


def load_test_inputs(data_root: Path, test_sets: Sequence[str], classes: Sequence[str], image_size: int):
    """{split: (Dataset, float32 N x 3 x S x S array in [0, 1])}; a missing test set raises DataError naming it."""
    from harness.data import load_test, resize_batch, working_short_side

    out = {}
    for split in test_sets:
        ds = load_test(Path(data_root), split, classes, max_short_side=working_short_side(image_size))
        x = resize_batch([s.image for s in ds.samples], image_size).float().div_(255).numpy()
        out[split] = (ds, x)
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    import onnx

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
            return program.model_proto
        buf = io.BytesIO()
        torch.onnx.export(
            module,
            (example,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
        return onnx.load_from_string(buf.getvalue())


def _dims(value_info) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None))
    return out


def check_graph(proto, image_size: int, num_classes: int, where: str) -> dict[str, Any]:
    """The ModelProto honours the contract: one float input N x 3 x S x S with N symbolic, float logits N x C,
    opset >= 17, and no bf16/fp16 tensors anywhere in the weights."""
    import onnx

    TP = onnx.TensorProto
    ins = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    outs = list(proto.graph.output)
    if len(ins) != 1 or len(outs) != 1:
        raise ExportError(
            f"{where}: expected one input and one output, got {[i.name for i in ins]} -> {[o.name for o in outs]}"
        )
    inp, out = ins[0], outs[0]
    ishape, oshape = _dims(inp), _dims(out)
    if inp.type.tensor_type.elem_type != TP.FLOAT or out.type.tensor_type.elem_type != TP.FLOAT:
        raise ExportError(f"{where}: input/output must be float32")
    if len(ishape) != 4 or not isinstance(ishape[0], str) or not ishape[0]:
        raise ExportError(f"{where}: input batch dimension is not symbolic: shape {ishape}")
    if ishape[1:] != [3, image_size, image_size]:
        raise ExportError(f"{where}: input shape {ishape}, expected [N, 3, {image_size}, {image_size}]")
    if len(oshape) != 2 or not isinstance(oshape[0], str) or oshape[1] != num_classes:
        raise ExportError(f"{where}: output shape {oshape}, expected [N, {num_classes}] with N symbolic")
    low = sorted(
        {TP.DataType.Name(t.data_type) for t in proto.graph.initializer if t.data_type in (TP.BFLOAT16, TP.FLOAT16)}
    )
    if low:
        raise ExportError(f"{where}: graph holds {low} weights; the deployed model must be float32")
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise ExportError(f"{where}: opset {opset} < {MIN_OPSET}")
    return {"input": {"name": inp.name, "shape": ishape}, "output": {"name": out.name, "shape": oshape}, "opset": opset}


def set_metadata(proto, props: dict[str, Any]) -> None:
    """Replace metadata_props entries with `props` (non-strings are JSON-encoded)."""
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v if isinstance(v, str) else json.dumps(v)


def save_proto(proto, path: Path, final_name: str) -> str | None:
    """Write `proto` to `path`; weights inline, or (over 2 GiB) to `<final_name>.data` beside it. Returns that name."""
    import onnx

    if proto.ByteSize() <= EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(proto, str(path), save_as_external_data=False)
        return None
    location = f"{final_name}.data"
    (path.parent / location).unlink(missing_ok=True)
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=1024,
    )
    return location


# --- parity ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def torch_logits(module: nn.Module, x: np.ndarray, batch: int = PARITY_BATCH) -> np.ndarray:
    outs = [module(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(outs, 0)


def compare(
    ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, tie_margin: float = 0.0, names: Sequence[str] = ()
) -> dict[str, Any]:
    """Elementwise |got - ref| <= atol + rtol * |ref| and identical top-1 (except where the reference's top-2 margin
    is below tie_margin). max_rel is over elements with |ref| > atol (relative error of a logit near 0 is noise), so it
    may exceed rtol on a passing comparison whose absolute differences are below atol; max_tolerance_used is the
    single number to read against the criterion."""
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    if ref.shape != got.shape:
        return {"passed": False, "error": f"shape {list(got.shape)} != reference {list(ref.shape)}"}
    diff = np.abs(got - ref)
    big = np.abs(ref) > atol
    within = bool(np.all(diff <= atol + rtol * np.abs(ref)))
    top_ref, top_got = ref.argmax(1), got.argmax(1)
    srt = np.sort(ref, axis=1)
    margin = srt[:, -1] - srt[:, -2] if ref.shape[1] > 1 else np.full(len(ref), np.inf)
    flips = np.nonzero((top_ref != top_got) & (margin >= tie_margin))[0]
    ties = np.nonzero((top_ref != top_got) & (margin < tie_margin))[0]
    return {
        "images": int(len(ref)),
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "max_rel": float((diff[big] / np.abs(ref[big])).max()) if big.any() else 0.0,
        # largest |got - ref| / (atol + rtol * |ref|): the share of the allowed difference used; <= 1 passes
        "max_tolerance_used": float((diff / (atol + rtol * np.abs(ref))).max()) if diff.size else 0.0,
        "within_tolerance": within,
        "top1_mismatches": [names[i] if i < len(names) else int(i) for i in flips],
        "top1_near_tie_flips": [names[i] if i < len(names) else int(i) for i in ties],
        "passed": within and len(flips) == 0,
    }


def parity(
    onnx_path: Path,
    module: nn.Module,
    inputs: dict[str, tuple[Any, np.ndarray]],
    providers: Sequence[str],
    atol: float,
    rtol: float,
    tie_margin: float = 0.0,
    references: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """PyTorch (CPU, float32) vs onnxruntime on `providers`, per test set, with batches of 8 and one of 1."""
    session = runtime.create_session(onnx_path, providers)
    per_set, worst_abs, worst_rel, worst_used, passed = {}, 0.0, 0.0, 0.0, True
    for split, (ds, x) in inputs.items():
        ref = references[split] if references else torch_logits(module, x)
        got = runtime.run_batches(session, x, PARITY_BATCH)
        res = compare(ref, got, atol, rtol, tie_margin, [s.name for s in ds.samples])
        single = runtime.run_batches(session, x[:1], 1)  # the batch of one a deployment sees
        one = compare(ref[:1], single, atol, rtol, tie_margin)
        res["batch1_max_abs"], res["passed"] = one.get("max_abs"), res["passed"] and one["passed"]
        per_set[split] = res
        worst_abs, worst_rel = max(worst_abs, res.get("max_abs", np.inf)), max(worst_rel, res.get("max_rel", np.inf))
        worst_used = max(worst_used, res.get("max_tolerance_used", np.inf))
        passed &= res["passed"]
    return {
        "providers": session.get_providers(),
        "atol": atol,
        "rtol": rtol,
        "top1_tie_margin": tie_margin,
        "max_abs": worst_abs,
        "max_rel": worst_rel,
        "max_tolerance_used": worst_used,
        "passed": bool(passed),
        "test_sets": per_set,
    }


# --- one variant, one run --------------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def export_inputs(vdir: Path, inputs: dict[str, tuple[Any, np.ndarray]]) -> dict[str, Any]:
    """What an export is made from: the checkpoint (sha256) and the test images its parity was measured on."""
    from harness.provenance import dataset_fingerprint

    return {
        "model_sha256": sha256_file(Path(vdir) / "model.pt"),
        "test_data": {split: dataset_fingerprint(ds) for split, (ds, _) in inputs.items()},
    }


def export_is_current(vdir: Path, inputs: dict[str, Any] | None = None) -> bool:
    """model.onnx exists, export.json says parity passed, the file is the one that passed (sha256), and (when
    `inputs` are given) it was made from these inputs (checkpoint and test images)."""
    onnx_path, rec_path = Path(vdir) / "model.onnx", Path(vdir) / "export.json"
    if not (onnx_path.is_file() and rec_path.is_file()):
        return False
    try:
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(rec, dict) or (inputs is not None and rec.get("inputs") != inputs):
        return False
    return bool((rec.get("parity") or {}).get("passed")) and rec.get("sha256") == sha256_file(onnx_path)


def export_variant(
    vdir: Path,
    force: bool = False,
    exporter: str = DEFAULT_EXPORTER,
    opset: int | None = None,
    log=None,
    data_root: Path | None = None,
) -> dict[str, Any]:
    """Export vdir/model.pt to vdir/model.onnx, check it, measure parity, record vdir/export.json; returns the record.

    Skipped (the existing record is returned, with "skipped": true) when the current model.onnx already passed parity,
    unless force. Inputs (checkpoint, config, test sets) are all read before anything is written; the model is
    exported to a temporary file in vdir and renamed into place only after checker and parity passed.
    """
    import onnx
    import onnxscript

    from harness.train import load_checkpoint

    vdir = Path(vdir)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    onnx_path, rec_path = vdir / "model.onnx", vdir / "export.json"
    if not (vdir / "model.pt").is_file():
        raise FileNotFoundError(f"{vdir / 'model.pt'} is missing; train this variant first (harness train)")
    config, profile = read_variant_config(vdir, data_root)
    classes, size = list(config["classes"]), profile.image_size
    inputs = load_test_inputs(config["data_root"], profile.test_sets, classes, size)  # missing test set: fail early
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
