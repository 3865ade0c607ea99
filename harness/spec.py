"""The input/output contract of a model under `harness check`: read, resolved against the graph, checked at the edge.

A ``ModelSpec`` says how to turn the dataset's photos into the array a model takes and how to read what it gives:

- input: graph input name, ``layout`` NCHW | NHWC, ``size`` (height, width), ``dtype`` float32 | float16 | uint8,
  ``value_range`` "0..1" | "0..255" (uint8 is always 0..255), ``mean``/``std`` per channel in value_range units and
  in the model's channel order (None: the graph normalises), ``channels`` RGB | BGR, ``resize`` "stretch" (every
  photo stretched to H x W, as harness trains and evaluates) | "shorter-side-crop" (scaled, aspect kept, so that it
  covers H x W, then centre-cropped);
- output: graph output name, ``output_kind`` logits | probabilities, ``classes``: the class names in OUTPUT order.

Where each value comes from, in this order: the spec file / ``--set`` (``read_spec``), the model's ONNX metadata when
it is a ``harness export`` (classes, image size, NCHW float32 0..1 RGB, stretch, logits, normalisation inside the
graph), the graph's declared input/output (names, NCHW if dim 1 is 3, NHWC if the last is 3, static H x W, the tensor
type), and defaults. ``ModelSpec.sources`` records the origin of every field.

Applying a spec (photos in, probabilities out, maps back onto the photo) is `harness.preprocess`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.config import parse_override
from harness.model_graph import GraphInfo, TensorInfo, graph_of_file, graph_of_session, shape_text
from harness.validate import ConfigError, fail, read_choice, read_num, read_str, read_str_list, read_toml

LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "float16", "uint8")
VALUE_RANGES = ("0..1", "0..255")
CHANNELS = ("RGB", "BGR")
RESIZES = ("stretch", "shorter-side-crop")
OUTPUT_KINDS = ("logits", "probabilities")
FIELDS = (
    "input",
    "layout",
    "size",
    "dtype",
    "value_range",
    "mean",
    "std",
    "channels",
    "resize",
    "output",
    "output_kind",
    "classes",
)
NONE_WORDS = ("none", "graph")  # mean = "none": the graph normalises (TOML has no null)

# What a `harness export` is (harness/export.py): the defaults its metadata stands for.
HARNESS_META_CLASSES = "harness.classes"
HARNESS_META_SIZE = "harness.image_size"
# the defaults of any model's spec; a harness export's add its layout and dtype
DEFAULTS: dict[str, Any] = {
    "value_range": "0..1",
    "mean": None,
    "std": None,
    "channels": "RGB",
    "resize": "stretch",
    "output_kind": "logits",
}
HARNESS_DEFAULTS: dict[str, Any] = {"layout": "NCHW", "dtype": "float32", **DEFAULTS}

SRC_SET, SRC_META, SRC_GRAPH, SRC_SHAPE, SRC_DEFAULT = "--set", "ONNX metadata", "graph", "graph shape", "default"

# The largest input harness check feeds: 2048 x 2048 pixels (48 MiB per float32 image; a batch of 16 is 0.8 GB).
# Image classifiers are trained at 224 to 600 pixels; a declared 100000 x 100000 input would need 120 GB per image.
MAX_SIDE = 2048
MAX_INPUT_PIXELS = MAX_SIDE * MAX_SIDE


class SpecError(ConfigError):
    """The model's spec is invalid or contradicts the model or the dataset; the message names the field, where its
    value came from (the spec file, --set, the ONNX metadata of the model, its graph) and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """How to feed a model and read its output; see the module docstring for every field's convention."""

    input: str
    layout: str
    size: tuple[int, int]  # (height, width)
    dtype: str
    value_range: str
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    channels: str
    resize: str
    output: str
    output_kind: str
    classes: tuple[str, ...]  # in output order
    sources: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = None if self.mean is None else list(self.mean)
        d["std"] = None if self.std is None else list(self.std)
        d["classes"] = list(self.classes)
        d["sources"] = dict(self.sources)
        return d


class RawSpec(dict):
    """`read_spec`'s result: the given fields, validated, and `sources[field]` saying where each was given."""

    def __init__(self, values: Mapping[str, Any] | None = None, sources: Mapping[str, str] | None = None):
        super().__init__(values or {})
        self.sources: dict[str, str] = dict(sources or {})


# --- reading: a TOML file and KEY=VALUE overrides -------------------------------------------------------------------


def _unknown(key: str, where: str) -> SpecError:
    close = difflib.get_close_matches(key, FIELDS, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return SpecError(f"{where}: unknown key {key!r}{hint} (known: {list(FIELDS)})")


def _triple(value: Any, key: str, where: str, positive: bool) -> tuple[float, float, float] | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        fail(
            where,
            key,
            value,
            f"a list of 3 numbers{' > 0' if positive else ''} (one per channel, in the model's "
            f'channel order), or "none" when the graph normalises',
        )
    lo = 0 if positive else None
    a, b, c = (read_num(v, f"{key}[{i}]", where, min=lo, min_open=positive) for i, v in enumerate(value))
    return a, b, c


def _size(value: Any, key: str, where: str) -> tuple[int, int]:
    expected = "an integer >= 1 or [height, width] integers >= 1"
    if isinstance(value, int) and not isinstance(value, bool):
        items = [value, value]
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        items = list(value)
    else:
        fail(where, key, value, expected)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
        fail(where, key, value, expected)
    return int(items[0]), int(items[1])


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def validate_field(key: str, value: Any, where: str) -> Any:
    """One spec field checked and normalised (layout/channels case-insensitive; size int -> (S, S)); a SpecError
    "<where>: <key> = <value> must be ..." otherwise."""
    try:
        if key in ("input", "output"):
            return read_str(value, key, where)
        if key == "layout":
            return read_choice(_upper(value), key, where, LAYOUTS)
        if key == "channels":
            return read_choice(_upper(value), key, where, CHANNELS)
        if key == "size":
            return _size(value, key, where)
        if key == "dtype":
            return read_choice(value, key, where, DTYPES)
        if key == "value_range":
            return read_choice(value, key, where, VALUE_RANGES)
        if key in ("mean", "std"):
            return _triple(value, key, where, positive=key == "std")
        if key == "resize":
            return read_choice(value, key, where, RESIZES)
        if key == "output_kind":
            return read_choice(value, key, where, OUTPUT_KINDS)
        if key == "classes":
            return read_str_list(value, key, where, note="the model's class names, in the order of its output columns")
    except SpecError:
        raise
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    raise _unknown(key, where)


def read_spec(path: Path | None, overrides: Sequence[str] = ()) -> RawSpec:
    """The fields a spec file (top-level keys, or all under a [spec] table) and `--set KEY=VALUE` overrides (TOML
    values: layout="NHWC", mean=[123.7, 116.3, 103.5], classes=["a", "b"]; later ones win) give, validated.
    Unknown keys, bad types and bad choices are SpecErrors naming the file (or --set), the key and the value."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        path = Path(path)
        where = f"spec file {path}"
        hint = "; pass --spec PATH to a TOML file (or leave it out for a harness export)"
        raw = read_toml(path, "spec", where=where, unreadable="it", hint=hint, error=SpecError)
        if "spec" in raw:
            if not isinstance(raw["spec"], dict):
                raise SpecError(f"{where}: spec = {raw['spec']!r} must be a table ([spec])")
            others = sorted(k for k in raw if k != "spec")
            if others:
                raise SpecError(
                    f"{where}: keys {others} are outside the [spec] table; put every field in [spec] or none"
                )
            raw = raw["spec"]
        for key, value in raw.items():
            if isinstance(value, dict):
                raise SpecError(f"{where}: {key} is a table; the spec has only plain fields {list(FIELDS)}")
            values[key] = validate_field(key, value, where)
            sources[key] = where
    for item in overrides:
        try:
            keys, value = parse_override(item)
        except ConfigError as exc:
            raise SpecError(f"{SRC_SET}: {exc} (spec fields: {list(FIELDS)})") from None
        if len(keys) == 2 and keys[0] == "spec":
            keys = keys[1:]
        key = ".".join(keys)
        if key not in FIELDS:
            raise _unknown(key, f"{SRC_SET} {item!r}")
        values[key] = validate_field(key, value, SRC_SET)
        sources[key] = SRC_SET
    return RawSpec(values, sources)


# --- resolving and checking -----------------------------------------------------------------------------------------


def _harness_meta(graph: GraphInfo, model: Path, given: Collection[str] = ()) -> dict[str, Any] | None:
    """The fields a harness export's metadata stands for, or None for a foreign model. A field the spec gives
    (`given`) is not read from the metadata, so a spec's classes or size override broken metadata, as its errors
    say."""
    meta = graph.metadata
    if HARNESS_META_CLASSES not in meta:
        return None
    where = f"ONNX metadata of {model}"
    if "classes" in given:
        out = dict(HARNESS_DEFAULTS)
        if HARNESS_META_SIZE in meta and "size" not in given:
            out["size"] = _meta_size(meta, where)
        return out
    try:
        classes = json.loads(meta[HARNESS_META_CLASSES])
    except json.JSONDecodeError:
        classes = meta[HARNESS_META_CLASSES]
    if not isinstance(classes, list):
        raise SpecError(
            f"{where}: {HARNESS_META_CLASSES} = {meta[HARNESS_META_CLASSES]!r} is not a JSON list of "
            f"class names; re-export the model with `harness export --force`, or give classes = [...] "
            f"in a spec"
        )
    out = dict(HARNESS_DEFAULTS, classes=validate_field("classes", classes, where))
    if HARNESS_META_SIZE in meta and "size" not in given:
        out["size"] = _meta_size(meta, where)
    return out


def _meta_size(meta: Mapping[str, str], where: str) -> tuple[int, int]:
    try:
        size = int(meta[HARNESS_META_SIZE])
    except ValueError:
        raise SpecError(
            f"{where}: {HARNESS_META_SIZE} = {meta[HARNESS_META_SIZE]!r} is not an integer; "
            f"re-export with `harness export --force`, or give size = [H, W] in a spec"
        ) from None
    size_hw: tuple[int, int] = validate_field("size", size, where)
    return size_hw


def _pick(kind: str, tensors: Sequence[TensorInfo], named: str | None, where: str, model: Path) -> TensorInfo:
    names = [t.name for t in tensors]
    if named is not None:
        if named not in names:
            close = difflib.get_close_matches(named, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(
                f"{where}: {kind} = {named!r} is not a graph {kind} of {model}; its {kind}s are "
                f"{names}{hint}; set {kind} = one of them"
            )
        found = tensors[names.index(named)]
        if kind == "input" and len(tensors) > 1:
            others = [n for n in names if n != named]
            raise SpecError(
                f"{model}: the graph also requires inputs {others} besides {kind} = {named!r}; harness "
                f"check feeds one image tensor only; export the model with a single image input"
            )
        return found
    if not tensors:
        raise SpecError(f"{model}: the graph declares no {kind}s; it is not an image classifier")
    if len(tensors) > 1:
        raise SpecError(
            f"{model}: the graph has several {kind}s {names} and the spec names none; add "
            f'{kind} = "<name>" (one of {names}) to the spec or --set {kind}=NAME'
        )
    return tensors[0]


def _check_input_shape(spec: dict[str, Any], src: Mapping[str, str], t: TensorInfo, model: Path) -> None:
    shape = t.shape
    at = f"{model}: input {t.name!r} has shape {shape_text(shape)}"
    if shape is not None and len(shape) != 4:
        raise SpecError(
            f"{at} (rank {len(shape)}); harness check feeds a batch of images, rank 4 (N x 3 x H x W or N x H x W x 3)"
        )
    if shape is None:
        return
    ch, hw = (1, (2, 3)) if spec["layout"] == "NCHW" else (3, (1, 2))
    if isinstance(shape[ch], int) and shape[ch] != 3:
        other = 3 if spec["layout"] == "NCHW" else 1
        if shape[other] == 3:
            guess = "NHWC" if other == 3 else "NCHW"
            raise SpecError(
                f"{src['layout']}: layout = {spec['layout']!r} contradicts the graph: {at}, channels are "
                f"at dim {other} ({guess}); set layout = {guess!r}"
            )
        raise SpecError(
            f"{at}: the channel dim ({spec['layout']}) is {shape[ch]}, not 3; harness check feeds RGB "
            f"images (set layout if the channels are elsewhere)"
        )
    for axis, want, name in zip(hw, spec["size"], ("height", "width")):
        if isinstance(shape[axis], int) and shape[axis] != want:
            raise SpecError(
                f"{src['size']}: size = {list(spec['size'])} contradicts the graph: {at} "
                f"({spec['layout']}, {name} {shape[axis]}); set size = "
                f"[{shape[hw[0]] if isinstance(shape[hw[0]], int) else spec['size'][0]}, "
                f"{shape[hw[1]] if isinstance(shape[hw[1]], int) else spec['size'][1]}]"
            )


def _check_input_size(size: tuple[int, int], source: str, t: TensorInfo, model: Path) -> None:
    """Refuse, before anything is allocated, an input larger than MAX_INPUT_PIXELS per image (the photos of a test
    set are prepared at that size, a batch at a time, and occlusion runs many batches of them)."""
    h, w = size
    if h * w <= MAX_INPUT_PIXELS:
        return
    cost = f"{h} x {w} = {h * w:,} pixels per image, {3 * 4 * h * w / 1e9:.1f} GB as one float32 image"
    limit = f"harness check's limit is {MAX_INPUT_PIXELS:,} pixels ({MAX_SIDE} x {MAX_SIDE})"
    if source in (SRC_GRAPH, SRC_SHAPE):
        raise SpecError(
            f"{model}: input {t.name!r} declares shape {shape_text(t.shape)}: {cost}; {limit}. No override: "
            f"export the model with the input size it was trained at (or with a dynamic height and width, and "
            f"give size = [H, W] in a spec)"
        )
    where = f"ONNX metadata of {model}" if source == SRC_META else source
    raise SpecError(
        f"{where}: size = [{h}, {w}] (input {t.name!r}, shape {shape_text(t.shape)}): {cost}; {limit}. Set "
        f"size = [H, W] to the size the model was trained at"
    )


def _infer_layout(t: TensorInfo, model: Path) -> str:
    shape = t.shape
    if shape is None or len(shape) != 4:
        rank = "" if shape is None else f" (rank {len(shape)})"
        raise SpecError(
            f"{model}: input {t.name!r} has shape {shape_text(shape)}{rank}; harness check feeds a batch "
            f"of images, rank 4 (N x 3 x H x W or N x H x W x 3)"
        )
    first, last = shape[1] == 3, shape[3] == 3
    if first != last:
        return "NCHW" if first else "NHWC"
    why = "both dim 1 and the last dim are 3" if first else "neither dim 1 nor the last dim is a static 3"
    raise SpecError(
        f"{model}: input {t.name!r} has shape {shape_text(shape)}: {why}, so the channel axis is not "
        f'known; add layout = "NCHW" or "NHWC" to the spec'
    )


def _infer_size(t: TensorInfo, layout: str) -> tuple[int, int] | None:
    if t.shape is None or len(t.shape) != 4:
        return None
    h, w = (t.shape[2], t.shape[3]) if layout == "NCHW" else (t.shape[1], t.shape[2])
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def _check_classes(classes: tuple[str, ...], where: str, dataset_classes: Sequence[str]) -> None:
    dataset = list(dataset_classes)
    missing = [c for c in dataset if c not in classes]
    extra = [c for c in classes if c not in dataset]
    if not missing and not extra and len(classes) == len(dataset):
        return
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        hints = [f"{e!r} -> {m[0]!r}?" for e in extra if (m := difflib.get_close_matches(e, missing, n=1))]
        parts.append(f"not in the dataset {extra}" + (f" ({', '.join(hints)})" if hints else ""))
    if len(classes) != len(dataset):
        parts.append(f"{len(classes)} names for the dataset's {len(dataset)} classes")
    raise SpecError(
        f"{where}: classes = {list(classes)} are not the dataset's classes {dataset}: {'; '.join(parts)}; "
        f"list the model's class names, each dataset class once, in the order of its output columns"
    )


def resolve_spec(model_path: Path, raw: Mapping[str, Any], dataset_classes: Sequence[str], session=None) -> ModelSpec:
    """The model's full spec: `raw` (from read_spec, or a plain dict from Python; validated again either way), then
    the ONNX metadata of a harness export, then the graph's declared input/output, then defaults. Everything that can
    be checked before any work is: the classes against the dataset's, the input's rank, channel axis and static size
    against layout/size, the input type against dtype, the output's static width against the classes. Every failure
    is a SpecError naming the field, where its value came from and what to do. `session` (onnxruntime), when given,
    is read instead of loading the file."""
    model = Path(model_path)
    given_sources = getattr(raw, "sources", {})
    spec: dict[str, Any] = {}
    src: dict[str, str] = {}
    for key, value in raw.items():
        where = given_sources.get(key, "spec")
        spec[key] = validate_field(key, value, where)
        src[key] = where
    graph = graph_of_session(session) if session is not None else graph_of_file(model)
    meta = _harness_meta(graph, model, given=spec)
    meta_where = f"ONNX metadata of {model}"

    def fill(key: str, value: Any, source: str) -> None:
        if key not in spec:
            spec[key], src[key] = value, source

    if meta is not None:
        for key, value in meta.items():
            fill(key, value, SRC_META)

    inp = _pick("input", graph.inputs, spec.get("input"), src.get("input", "spec"), model)
    out = _pick("output", graph.outputs, spec.get("output"), src.get("output", "spec"), model)
    fill("input", inp.name, SRC_GRAPH)
    fill("output", out.name, SRC_GRAPH)
    if "layout" not in spec:
        fill("layout", _infer_layout(inp, model), SRC_SHAPE)
    if "size" not in spec:
        size = _infer_size(inp, spec["layout"])
        if size is None:
            raise SpecError(
                f"{model}: input {inp.name!r} has shape {shape_text(inp.shape)}, so the image size is "
                f"not known; add size = [H, W] (the height and width the model was trained at) to the "
                f"spec"
            )
        fill("size", size, SRC_SHAPE)
    _check_input_shape(spec, {k: _where(src, k, model) for k in src}, inp, model)
    _check_input_size(spec["size"], src["size"], inp, model)

    if inp.dtype not in DTYPES:
        raise SpecError(f"{model}: input {inp.name!r} is {inp.dtype}; harness check feeds {list(DTYPES)}")
    if "dtype" in spec and spec["dtype"] != inp.dtype:
        raise SpecError(
            f"{_where(src, 'dtype', model)}: dtype = {spec['dtype']!r} contradicts the graph of "
            f"{model}: input {inp.name!r} is {inp.dtype}; set dtype = {inp.dtype!r}"
        )
    fill("dtype", inp.dtype, SRC_GRAPH)
    if spec["dtype"] == "uint8":
        if spec.get("value_range", "0..255") != "0..255":
            raise SpecError(
                f"{_where(src, 'value_range', model)}: value_range = {spec['value_range']!r} with dtype "
                f"'uint8': uint8 images are 0..255; remove value_range or set it to '0..255'"
            )
        fill("value_range", "0..255", "dtype uint8")
        for key in ("mean", "std"):
            if spec.get(key) is not None:
                raise SpecError(
                    f"{_where(src, key, model)}: {key} = {list(spec[key])} with dtype 'uint8': a uint8 "
                    f"input cannot carry normalised values, so the graph must normalise; remove {key}"
                )
    if spec.get("mean") is not None or spec.get("std") is not None:  # one given: the other is the identity
        fill("mean", (0.0, 0.0, 0.0), "default (std given)")
        fill("std", (1.0, 1.0, 1.0), "default (mean given)")
    for key, value in DEFAULTS.items():
        fill(key, value, SRC_DEFAULT)

    if "classes" not in spec:
        raise SpecError(
            f"{model}: classes: the model's class names are not known (no harness metadata in the model, "
            f'none in the spec); add classes = ["...", ...] to the spec, the names in the order of the '
            f"output columns of {out.name!r} (the dataset's classes are {list(dataset_classes)})"
        )
    cls_where = meta_where if src["classes"] == SRC_META else _where(src, "classes", model)
    _check_classes(spec["classes"], cls_where, dataset_classes)
    if out.shape is not None:
        width = out.shape[-1] if out.shape else None
        if len(out.shape) != 2:
            raise SpecError(
                f"{model}: output {out.name!r} has shape {shape_text(out.shape)}; harness check reads "
                f"N x C class scores (set output to the graph output that gives them)"
            )
        if isinstance(width, int) and width != len(spec["classes"]):
            raise SpecError(
                f"{cls_where}: classes lists {len(spec['classes'])} names, but output {out.name!r} has "
                f"shape {shape_text(out.shape)} ({width} columns); the model does not classify these "
                f"classes, or output names the wrong graph output"
            )
    return ModelSpec(**{k: spec[k] for k in FIELDS}, sources={k: src[k] for k in FIELDS})


def _where(src: Mapping[str, str], key: str, model: Path) -> str:
    """The message prefix for a field: its spec file / --set, or the model for metadata, graph and defaults."""
    s = src.get(key, SRC_DEFAULT)
    if s == SRC_META:
        return f"ONNX metadata of {model}"
    if s in (SRC_GRAPH, SRC_SHAPE) or s.startswith(SRC_DEFAULT) or s.startswith("dtype"):
        return f"{model} ({key} from {s})"
    return s
