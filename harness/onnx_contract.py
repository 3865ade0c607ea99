"""The deployed model.onnx's contract, checked on the graph before it is saved: one float32 input N x 3 x S x S with N
symbolic, float32 logits N x C, opset >= 17, no bf16/fp16 weights; its metadata; saving it (external data > 2 GiB).

Input ``input`` is RGB in [0, 1] (normalisation is inside the graph); output ``logits``. The graph is float32
throughout: bf16 is only ever used by autocast during GPU training, never in ONNX.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

MIN_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

# Protobuf caps a single file at 2 GiB; above this the weights go to an external-data file beside model.onnx.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


class ExportError(ValueError):
    """Export, graph check or parity failed; the message names the file."""


def _dims(value_info) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None))
    return out


def check_graph(proto, image_size: int, num_classes: int, where: str) -> dict[str, Any]:
    """The ModelProto honours the contract: one float input N x 3 x S x S with N symbolic, float logits N x C,
    opset >= 17, and no bf16/fp16 tensors anywhere in the weights."""
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
