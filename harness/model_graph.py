"""What an ONNX model declares -- its required inputs, outputs (names, element types, shapes) and metadata -- read
from an onnxruntime session or from the file, without running it (`harness check` resolves a spec against it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from harness.runtime import ModelLoadError

_ONNX_TYPES = {
    "float": "float32",
    "float16": "float16",
    "uint8": "uint8",
    "double": "float64",
    "int8": "int8",
    "int32": "int32",
    "int64": "int64",
    "bfloat16": "bfloat16",
}


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as declared: name, element type, shape."""

    name: str
    dtype: str  # float32, uint8, ... (numpy names; onnx names for the rest)
    shape: tuple[int | str | None, ...] | None  # None: rank unknown; int: static; str/None: dynamic


@dataclass(frozen=True)
class GraphInfo:
    """The declared inputs and outputs of a model and its metadata_props."""

    inputs: tuple[TensorInfo, ...]  # required inputs only (not initializers)
    outputs: tuple[TensorInfo, ...]
    metadata: Mapping[str, str]


def _ort_type(t: str) -> str:
    inner = t[len("tensor(") : -1] if t.startswith("tensor(") and t.endswith(")") else t
    return _ONNX_TYPES.get(inner, inner)


def _dims(shape: Any) -> tuple[int | str | None, ...] | None:
    if shape is None:
        return None
    return tuple(d if isinstance(d, str) or d is None else (int(d) if int(d) > 0 else None) for d in shape)


def graph_of_session(session) -> GraphInfo:
    """What an onnxruntime session's model declares."""

    def conv(v) -> TensorInfo:
        return TensorInfo(v.name, _ort_type(v.type), _dims(v.shape))

    meta = dict(session.get_modelmeta().custom_metadata_map or {})
    return GraphInfo(tuple(conv(v) for v in session.get_inputs()), tuple(conv(v) for v in session.get_outputs()), meta)


def graph_of_file(path: Path) -> GraphInfo:
    """What the ONNX file declares (read without its external data); ModelLoadError naming the file otherwise."""
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist; pass the path of an ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: cannot read the ONNX model ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); the file is corrupt, "
            f"truncated or not an ONNX model"
        ) from exc

    def conv(v) -> TensorInfo:
        tt = v.type.tensor_type
        dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower()
        shape = None
        if tt.HasField("shape"):
            shape = tuple(
                d.dim_value
                if d.HasField("dim_value") and d.dim_value > 0
                else (d.dim_param if d.HasField("dim_param") and d.dim_param else None)
                for d in tt.shape.dim
            )
        return TensorInfo(v.name, _ONNX_TYPES.get(dtype, dtype), shape)

    inits = {t.name for t in proto.graph.initializer}
    return GraphInfo(
        tuple(conv(v) for v in proto.graph.input if v.name not in inits),
        tuple(conv(v) for v in proto.graph.output),
        {p.key: p.value for p in proto.metadata_props},
    )


def shape_text(shape: tuple | None) -> str:
    """A shape as messages show it: [1, 3, ?, ?], or 'unknown rank'."""
    return "unknown rank" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
