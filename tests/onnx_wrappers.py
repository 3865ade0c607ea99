"""Test helpers that build ONNX graphs: a harness-like export, a foreign-looking wrapper around it, tiny graphs.

- ``harness_like_model``: a tiny torch classifier exported exactly as ``harness export`` does (``to_onnx`` and
  ``set_metadata`` with the ``harness.*`` keys), so metadata defaults can be tested without training.
- ``wrap_nhwc_uint8_bgr_probs``: the same network behind another contract (uint8 N x H x W x 3 BGR 0..255 in,
  softmax probabilities in another class order out), as a vendor's model would be; no harness metadata.
- ``mean_model``: input -> mean over everything but the batch -> N x C scores; any input shape/type, extra inputs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from harness.export import to_onnx
from harness.onnx_contract import set_metadata

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TinyNet(nn.Module):
    """Normalisation inside (as harness models have), a conv that mixes channels and positions, a linear head."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 6, 5, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv((x - self.mean) / self.std))
        return self.head(torch.flatten(self.pool(x), 1))


def harness_like_model(
    path: Path, classes: Sequence[str], size: int = 32, seed: int = 0, exporter: str = "dynamo"
) -> Path:
    """A tiny classifier over `classes` at `size` px, written to `path` as a harness export (its metadata, its
    input/output names and shapes). The dynamo exporter is harness's default (~3 s on 2 cores); "torchscript" is
    faster. Weights are scaled so that the logits spread over a few units (softmax far from uniform)."""
    torch.manual_seed(seed)
    net = TinyNet(len(classes)).eval()
    with torch.no_grad():
        net.head.weight.mul_(8.0)
    proto = to_onnx(net, size, exporter, 18 if exporter == "dynamo" else 17)
    set_metadata(
        proto,
        {
            "harness.classes": list(classes),
            "harness.image_size": str(size),
            "harness.backbone": "tiny",
            "harness.variant": "scratch-test",
            "harness.tta_hflip": json.dumps(False),
            "harness.exporter": f"torch.onnx.export(dynamo={exporter == 'dynamo'})",
            "harness.opset": "18",
            "harness.input": "RGB float32 in [0, 1], NCHW, stretched to image_size; normalisation inside the graph",
            "harness.output": "logits N x C in harness.classes order",
        },
    )
    path = Path(path)
    onnx.save_model(proto, str(path))
    return path


def _const(name: str, array: np.ndarray):
    return numpy_helper.from_array(np.asarray(array), name)


def wrap_nhwc_uint8_bgr_probs(
    src_path: Path, dst_path: Path, class_order: Sequence[int], metadata: bool = False
) -> Path:
    """An ONNX model around `src_path` (a float32 N x 3 x H x W RGB 0..1 -> N x C logits model with static H, W):
    input "image" uint8 N x H x W x 3 BGR 0..255 -> Cast, / 255, channel reverse, Transpose to NCHW -> the source
    graph (inlined, names prefixed "src/") -> Softmax -> Gather of the columns `class_order` -> output "probs":
    column j of "probs" is class `class_order[j]` of the source. `metadata=True` copies the source's metadata
    (which then contradicts this graph: a test of that contradiction); by default the wrapper is a foreign model."""
    src = onnx.load(str(src_path))
    src_in, src_out = src.graph.input[0], src.graph.output[0]
    dims = src_in.type.tensor_type.shape.dim
    h, w = dims[2].dim_value, dims[3].dim_value
    if not (h and w):
        raise ValueError(f"{src_path}: input H x W must be static, got {dims}")
    prefixed = onnx.compose.add_prefix(src, "src/")
    p_in, p_out = "src/" + src_in.name, "src/" + src_out.name
    pre = [
        helper.make_node("Cast", ["image"], ["w/float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["w/float", "w/255"], ["w/unit"]),
        helper.make_node("Gather", ["w/unit", "w/bgr2rgb"], ["w/rgb"], axis=3),
        helper.make_node("Transpose", ["w/rgb"], [p_in], perm=[0, 3, 1, 2]),
    ]
    post = [
        helper.make_node("Softmax", [p_out], ["w/probs"], axis=1),
        helper.make_node("Gather", ["w/probs", "w/order"], ["probs"], axis=1),
    ]
    consts = [
        _const("w/255", np.float32(255.0)),
        _const("w/bgr2rgb", np.array([2, 1, 0], np.int64)),
        _const("w/order", np.asarray(list(class_order), np.int64)),
    ]
    graph = helper.make_graph(
        pre + list(prefixed.graph.node) + post,
        "wrapped",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", h, w, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(class_order)])],
        list(prefixed.graph.initializer) + consts,
        value_info=list(prefixed.graph.value_info),
    )
    model = helper.make_model(graph, opset_imports=list(src.opset_import), ir_version=src.ir_version)
    model.functions.extend(prefixed.functions)
    if metadata:
        set_metadata(model, {p.key: p.value for p in src.metadata_props})
    onnx.checker.check_model(model)
    dst_path = Path(dst_path)
    onnx.save_model(model, str(dst_path))
    return dst_path


def mean_model(
    path: Path,
    input_shape: Sequence[int | str] = ("N", 3, 32, 32),
    num_classes: int = 3,
    elem_type: int = TensorProto.FLOAT,
    output_shape: Sequence[int | str] | None = None,
    input_name: str = "x",
    output_name: str = "y",
    extra_inputs: Sequence[str] = (),
    softmax: bool = False,
    seed: int = 0,
) -> Path:
    """input -> Cast to float -> mean over every axis but the first -> times a fixed row per class (+ a bias per
    class) -> output (N x num_classes scores; `softmax` turns them into probabilities). `extra_inputs` are further
    float [N, 1] graph inputs added to the result (required inputs). `output_shape` declares the output shape (a
    lie, to test shape checks); by default ["N", num_classes]."""
    rng = np.random.default_rng(seed)
    rank = len(input_shape)
    nodes = [
        helper.make_node("Cast", [input_name], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "one"], ["m1"]),
        helper.make_node("MatMul", ["m1", "wrow"], ["s0"]),
        helper.make_node("Add", ["s0", "bias"], ["s"]),
    ]
    last = "s"
    inputs = [helper.make_tensor_value_info(input_name, elem_type, list(input_shape))]
    for k, name in enumerate(extra_inputs):
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 1]))
        nodes.append(helper.make_node("Add", [last, name], [f"e{k}"]))
        last = f"e{k}"
    nodes.append(
        helper.make_node(
            "Softmax" if softmax else "Identity", [last], [output_name], **({"axis": 1} if softmax else {})
        )
    )
    inits = [
        _const("axes", np.arange(1, rank, dtype=np.int64)),
        _const("one", np.array([1], np.int64)),
        _const("wrow", rng.normal(size=(1, num_classes)).astype(np.float32)),
        _const("bias", rng.normal(size=(num_classes,)).astype(np.float32)),
    ]
    out_shape = list(output_shape) if output_shape is not None else ["N", num_classes]
    graph = helper.make_graph(
        nodes, "mean", inputs, [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_shape)], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    path = Path(path)
    onnx.save_model(model, str(path))
    return path


__all__ = ["harness_like_model", "wrap_nhwc_uint8_bgr_probs", "mean_model", "TinyNet"]
