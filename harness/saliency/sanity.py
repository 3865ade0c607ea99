"""Sanity check of saliency maps: model-parameter randomisation (Adebayo et al. 2018, "Sanity checks for saliency
maps", NeurIPS).

Recompute the maps with the classifier's last layer(s) re-drawn at random and compare them with the trained model's
maps by Spearman rank correlation. Maps that barely change do not depend on what the model learnt.

- ``randomize_onnx_head``: a copy of an ONNX model whose final Gemm / MatMul / 1x1 Conv weights (and biases) are
  replaced by seeded normal values of the same shape, dtype and standard deviation.
- ``randomize_torch_head``: the same, in place, on a torch module.
- ``map_rank_correlation``: Spearman correlation of two maps, with fixed answers for constant maps.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from scipy import stats
from torch import nn

# std used when the original tensor is constant (e.g. a zero-initialised bias): PyTorch-like small random values
FALLBACK_STD = 0.05

# Ops the walk from a weight-bearing node back to its weight may pass through (the weight is still a constant).
_WEIGHT_PATH_OPS = {"Identity", "Transpose", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten"}


def map_rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two same-shaped maps (``scipy.stats.spearmanr`` over the flattened values).

    Conventions: both maps constant (e.g. both all zeros) -> 1.0, "the maps do not depend on the model"; exactly one
    constant -> 0.0 (no rank agreement can be measured); NaN is never returned. ValueError when the shapes differ,
    a map is empty or holds NaN/inf."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"maps must have the same shape, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("maps are empty")
    for name, m in (("a", x), ("b", y)):
        if not np.isfinite(m).all():
            raise ValueError(f"map {name} holds {int((~np.isfinite(m)).sum())} NaN/inf values")
    const_x, const_y = bool(np.ptp(x) == 0), bool(np.ptp(y) == 0)
    if const_x and const_y:
        return 1.0
    if const_x or const_y:
        return 0.0
    r = float(stats.spearmanr(x.ravel(), y.ravel()).statistic)
    return r if np.isfinite(r) else 0.0


# --- ONNX -------------------------------------------------------------------------------------------------------------


def _check_layers(layers: int) -> None:
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 1:
        raise ValueError(f"layers must be an integer >= 1, got layers={layers!r}")


class _Graph:
    """Lookups over an onnx GraphProto: initializers, Constant nodes, producers and consumers of each value."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.inits = {t.name: i for i, t in enumerate(graph.initializer)}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)

    def constant(self, value: str) -> str | None:
        """The initializer or Constant-node output that ``value`` is computed from (through reshapes, transposes,
        casts), or None when it depends on anything else."""
        seen: set[str] = set()
        while value and value not in seen:
            seen.add(value)
            if value in self.inits:
                return value
            node = self.producer.get(value)
            if node is None:
                return None
            if node.op_type == "Constant":
                return value if any(a.name == "value" for a in node.attribute) else None
            if node.op_type not in _WEIGHT_PATH_OPS or not node.input:
                return None
            value = node.input[0]
        return None

    def tensor(self, key: str) -> onnx.TensorProto:
        if key in self.inits:
            return self.graph.initializer[self.inits[key]]
        node = self.producer[key]
        return next(a.t for a in node.attribute if a.name == "value")

    def set_tensor(self, key: str, new: onnx.TensorProto) -> None:
        if key in self.inits:
            self.graph.initializer[self.inits[key]].CopyFrom(new)
        else:
            node = self.producer[key]
            next(a for a in node.attribute if a.name == "value").t.CopyFrom(new)

    def layer(self, node: Any) -> tuple[str, list[str]] | None:
        """(weight, biases) when ``node`` is a classifier layer with a constant weight: Gemm (B, bias C), MatMul
        (one constant side, bias = a following Add with a constant operand) or a 1x1 Conv (W, bias B)."""
        op, ins = node.op_type, list(node.input)
        weight, biases = None, []
        if op == "Gemm" and len(ins) >= 2:
            weight = self.constant(ins[1])
            if len(ins) >= 3 and ins[2]:
                biases.append(self.constant(ins[2]))
        elif op == "MatMul" and len(ins) == 2:
            sides = [self.constant(v) for v in ins]
            if (sides[0] is None) != (sides[1] is None):
                weight = sides[0] or sides[1]
        elif op == "Conv" and len(ins) >= 2:
            weight = self.constant(ins[1])
            if weight is not None and any(d != 1 for d in self.tensor(weight).dims[2:]):
                weight = None  # only a 1x1 conv is a classifier head
            if weight is not None and len(ins) >= 3 and ins[2]:
                biases.append(self.constant(ins[2]))
        if weight is None:
            return None
        for consumer in self.consumers.get(node.output[0], []):
            if consumer.op_type == "Add" and len(consumer.input) == 2:
                other = [v for v in consumer.input if v != node.output[0]]
                if other:
                    biases.append(self.constant(other[0]))
        return weight, [b for b in biases if b is not None and b != weight]


def _redraw(tensor: onnx.TensorProto, rng: np.random.Generator) -> onnx.TensorProto:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise ValueError(
            f"tensor {tensor.name!r} is stored as external data that is not loaded; load the model with "
            f"onnx.load(path) (which loads external data) before randomising"
        )
    arr = numpy_helper.to_array(tensor)
    if not (np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize >= 2):
        raise ValueError(
            f"tensor {tensor.name!r} has dtype {arr.dtype} (a quantised model?); only float weights can be randomised"
        )
    std = float(np.std(arr.astype(np.float64))) if arr.size > 1 else 0.0
    if not np.isfinite(std) or std == 0.0:
        std = FALLBACK_STD
    new = rng.normal(0.0, std, size=arr.shape).astype(arr.dtype)
    return numpy_helper.from_array(new, tensor.name)


def randomize_onnx_head(model: onnx.ModelProto, seed: int = 0, layers: int = 1) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with its last ``layers`` classifier layers re-drawn; returns (new model, names replaced).

    Walks breadth-first from the graph outputs towards the input; the first ``layers`` distinct weights met on Gemm,
    MatMul (one constant operand) or 1x1 Conv nodes are the head ("from the logits downward"). A weight used by
    several nodes (the harness export with hflip TTA runs the classifier on the image and on its mirror) is one
    layer and replaced once. Each weight and bias (Gemm C, Conv B, or the constant operand of an Add right after
    the node), initializer or Constant node, gets seeded normal values (``numpy.random.default_rng(seed)``, in walk
    order) of the same shape and dtype, mean 0 and the original's standard deviation (0.05 when that is 0). Fewer
    layers than asked: all that exist are replaced (see the returned names). None: ValueError."""
    _check_layers(layers)
    new = onnx.ModelProto()
    new.CopyFrom(model)
    g = _Graph(new.graph)
    queue = deque(o.name for o in new.graph.output)
    visited: set[int] = set()
    found: list[tuple[str, list[str]]] = []
    while queue and len(found) < layers:
        node = g.producer.get(queue.popleft())
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        hit = g.layer(node)
        if hit is not None and hit[0] not in {w for w, _ in found}:
            found.append(hit)
        queue.extend(v for v in node.input if v)
    if not found:
        raise ValueError(
            f"model {new.graph.name!r} has no final weight initializer to randomise: no Gemm, MatMul or "
            f"1x1 Conv with a constant weight on the way back from its outputs"
        )
    rng = np.random.default_rng(seed)
    replaced: list[str] = []
    for weight, biases in found:
        for key in [weight, *biases]:
            if key not in replaced:
                g.set_tensor(key, _redraw(g.tensor(key), rng))
                replaced.append(key)
    return new, replaced


# --- PyTorch ----------------------------------------------------------------------------------------------------------


def randomize_torch_head(module: nn.Module, seed: int = 0, layers: int = 1) -> list[str]:
    """Re-initialise, in place, the last ``layers`` ``nn.Linear`` / 1x1 ``nn.Conv2d`` modules in registration order
    (the classifier, "from the logits downward"); returns their module names, last first.

    Weights and biases get normal values from ``torch.Generator().manual_seed(seed)``, mean 0 and the original
    tensor's standard deviation (0.05 when that is 0). Fewer such modules than asked: all of them; none: ValueError."""
    _check_layers(layers)
    heads = [
        (n, m)
        for n, m in module.named_modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and all(k == 1 for k in m.kernel_size))
    ]
    if not heads:
        raise ValueError(f"{type(module).__name__} has no nn.Linear or 1x1 nn.Conv2d to randomise")
    chosen = heads[::-1][:layers]
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for _, m in chosen:
            for p in (m.weight, m.bias):
                if p is None:
                    continue
                std = float(p.detach().float().std()) if p.numel() > 1 else 0.0
                if not np.isfinite(std) or std == 0.0:
                    std = FALLBACK_STD
                draw = torch.randn(p.shape, generator=gen, dtype=torch.float32) * std
                p.copy_(draw.to(device=p.device, dtype=p.dtype))
    return [n for n, _ in chosen]
