"""Will TensorRT's ONNX parser take this graph? A static check that needs no GPU and no TensorRT.

Every node (subgraphs included) is checked against the operator tables in ``op_table``
(TensorRT 8.6 and 10.3, the oldest 10.x on Jetson) and against the attribute, input and type
restrictions that onnx-tensorrt documents in ``docs/operators.md`` or enforces in its importers
and static checkers (``onnxOpCheckers.cpp``): opset range, custom domains, DOUBLE and other
types TensorRT has not, UINT8 away from the graph's inputs/outputs, pooling dilations and rank,
extra outputs of MaxPool/BatchNormalization/LayerNormalization, Resize modes, constant ``axes``
/``K`` inputs where the parser needs them, Einsum ellipsis/diagonals, Pad/Scatter modes added
in later releases, LSTM/Lp restrictions, Q/DQ zero points, and INT64 constants that 8.6 clamps
to INT32. A problem names the node, the operator, what is wrong and the versions it fails on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtaudio.tensorrt.op_table import VERSIONS, TrtVersion

DEFAULT_VERSIONS = ("8.6", "10.3")
DEFAULT_DOMAINS = ("", "ai.onnx")
TOPK_MAX_K = 3840  # largest K of TensorRT's TopK layer
INT32_MAX = 2**31 - 1

# ONNX element type name -> TensorRT type name (None: TensorRT has no such type)
_ONNX_TO_TRT = {
    "FLOAT": "FP32",
    "FLOAT16": "FP16",
    "BFLOAT16": "BF16",
    "INT8": "INT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "UINT8": "UINT8",
    "BOOL": "BOOL",
    "FLOAT8E4M3FN": "FP8",
    "INT4": "INT4",
    "DOUBLE": "DOUBLE",
}
# ops whose documented types are not those of input 0 (a shape, a condition, a scalar, or nothing)
_TYPE_OF_OTHER_INPUT = {
    "ConstantOfShape",
    "Where",
    "If",
    "Loop",
    "Scan",
    "Range",
    "OneHot",
    "Shape",
    "Size",
    "RandomNormalLike",
    "RandomUniformLike",
    "EyeLike",
    "NonMaxSuppression",
    "DequantizeLinear",
}
_NOT_NODES = {"tensor", "constant", "input", "model"}


@dataclass(frozen=True)
class Issue:
    """One thing the parser would refuse (``error``) or accept with a caveat (``warning``)."""

    node: str
    op: str
    problem: str
    versions: tuple[str, ...]
    severity: str = "error"

    def line(self) -> str:
        where = f"{self.op} {self.node!r}" if self.op in _NOT_NODES else f"node {self.node!r} ({self.op})"
        return f"{self.severity}: {where}: {self.problem} [TensorRT {', '.join(self.versions)}]"


@dataclass
class TrtReport:
    """The outcome of ``check_model``: ``ok`` when no version refuses anything."""

    versions: tuple[str, ...]
    opset: int
    nodes: int
    op_types: list[str]
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def verdict(self) -> str:
        names = ", ".join(self.versions)
        if self.ok:
            warned = f", {len(self.issues)} warning(s)" if self.issues else ""
            return f"TensorRT {names}: supported ({self.nodes} nodes, {len(self.op_types)} op types, opset {self.opset}{warned})"
        return f"TensorRT {names}: NOT supported, {len(self.errors)} problem(s) in {self.nodes} nodes"

    def format(self) -> str:
        return "\n".join([self.verdict(), *(f"  {issue.line()}" for issue in self.issues)])

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "versions": list(self.versions),
            "opset": self.opset,
            "nodes": self.nodes,
            "issues": [asdict(issue) | {"versions": list(issue.versions)} for issue in self.issues],
        }


class _Graph:
    """Lookups shared by the rules: constants, producers and inferred element types."""

    def __init__(self, model: Any, opset: int):
        self.opset = opset
        self.constants: dict[str, np.ndarray] = {}
        self.types: dict[str, str] = {}
        self.consumers: dict[str, list[Any]] = {}
        self.io: set[str] = set()
        self._scan(model.graph, top=True)

    def _scan(self, graph: Any, top: bool) -> None:
        from onnx import TensorProto, numpy_helper

        name_of = TensorProto.DataType.Name
        for init in graph.initializer:
            self.constants[init.name] = numpy_helper.to_array(init)
            self.types[init.name] = name_of(init.data_type)
        for value in [*graph.input, *graph.output, *graph.value_info]:
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                self.types[value.name] = name_of(value.type.tensor_type.elem_type)
        if top:
            self.io = {v.name for v in [*graph.input, *graph.output]}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = numpy_helper.to_array(attr.t)
                        self.types[node.output[0]] = name_of(attr.t.data_type)
            for attr in node.attribute:
                for sub in [*([attr.g] if attr.HasField("g") else []), *attr.graphs]:
                    self._scan(sub, top=False)

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def trt_type(self, name: str) -> str | None:
        onnx_type = self.types.get(name)
        return _ONNX_TO_TRT.get(onnx_type, onnx_type) if onnx_type else None


Rule = Callable[[Any, dict[str, Any], _Graph, TrtVersion], Iterator[str]]
_RULES: dict[str, list[Rule]] = {}


def _rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in ops:
            _RULES.setdefault(op, []).append(fn)
        return fn

    return register


def _input(node: Any, index: int) -> str | None:
    return node.input[index] if len(node.input) > index and node.input[index] else None


@_rule("ArgMax", "ArgMin")
def _arg_select_last(node, attrs, g, v):
    if attrs.get("select_last_index", 0) and g.opset < 12:
        yield "select_last_index=1 needs opset >= 12"


@_rule("AveragePool", "MaxPool", "LpPool")
def _pooling(node, attrs, g, v):
    if any(d != 1 for d in attrs.get("dilations", [])):
        yield f"dilations {attrs['dilations']} unsupported (pooling layers have no dilation; must be all 1)"
    rank = len(attrs.get("kernel_shape", []))
    if rank not in (1, 2, 3):  # 1-D is expanded to 2-D by the importer
        yield f"{rank}-D pooling unsupported (1-D, 2-D or 3-D only)"


@_rule("MaxPool")
def _maxpool_indices(node, attrs, g, v):
    if len(node.output) > 1 and node.output[1]:
        yield "the Indices output is unsupported"


@_rule("BatchNormalization")
def _batchnorm(node, attrs, g, v):
    if attrs.get("training_mode", 0):
        yield "training_mode=1 unsupported"
    if any(node.output[1:]):
        yield "only the first output (Y) is supported"


@_rule("LayerNormalization")
def _layernorm(node, attrs, g, v):
    if any(node.output[1:]):
        yield "only the first output (Y) is supported (Mean/InvStdDev are training outputs)"


@_rule("Dropout")
def _dropout(node, attrs, g, v):
    training = _input(node, 2)
    if training and not (g.is_constant(training) and not bool(np.asarray(g.constants[training]).any())):
        yield "training_mode must be a constant False"


@_rule("Constant")
def _constant(node, attrs, g, v):
    bad = sorted({"sparse_value", "value_string", "value_strings"} & set(attrs))
    if bad:
        yield f"attribute {bad[0]} unsupported (only numeric value/value_float(s)/value_int(s))"


@_rule("Cast")
def _cast(node, attrs, g, v):
    target = _onnx_type_name(attrs.get("to", 1))
    if _ONNX_TO_TRT.get(target) not in v.tensor_types:
        yield f"cast to {target} unsupported (not a TensorRT tensor type)"


@_rule("Resize")
def _resize(node, attrs, g, v):
    modes = {"nearest", "linear"} | ({"cubic"} if v.release >= (10, 0) else set())
    mode = attrs.get("mode", "nearest")
    if mode not in modes:
        yield f"mode {mode!r} unsupported; allowed: {', '.join(sorted(modes))}"
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    allowed = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
    if ctm not in allowed:
        yield f"coordinate_transformation_mode {ctm!r} unsupported; allowed: {', '.join(allowed)}"
    if attrs.get("antialias", 0):
        yield "antialias=1 unsupported"
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        yield "keep_aspect_ratio_policy must be 'stretch'"


@_rule("TopK")
def _topk(node, attrs, g, v):
    k = _input(node, 1)  # a dynamic K is fine from 8.6 on
    if k and g.is_constant(k) and int(np.asarray(g.constants[k]).max()) >= TOPK_MAX_K:
        yield f"K={int(np.asarray(g.constants[k]).max())} too large (TopK takes K < {TOPK_MAX_K})"
    if v.release >= (10, 0) and not attrs.get("sorted", 1):
        yield "sorted=0 unsupported (must be 1)"


def _constant_input(index: int, what: str, fixed_in: tuple[int, int] | None = None) -> Rule:
    def rule(node, attrs, g, v):
        name = _input(node, index)
        if name and not g.is_constant(name) and (fixed_in is None or v.release < fixed_in):
            yield f"{what} must be an initializer or Constant"

    return rule


for _op in ("Squeeze", "Unsqueeze"):
    _rule(_op)(_constant_input(1, "axes", fixed_in=(10, 7)))
_rule("CumSum")(_constant_input(1, "axis", fixed_in=(10, 8)))
_rule("Pad")(_constant_input(3, "axes", fixed_in=(10, 4)))
_rule("Slice")(_constant_input(3, "axes", fixed_in=(10, 3)))
for _op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare"):
    _rule(_op)(_constant_input(1, "axes"))
_rule("InstanceNormalization")(_constant_input(1, "scale"))
_rule("InstanceNormalization")(_constant_input(2, "bias B"))


@_rule("Einsum")
def _einsum(node, attrs, g, v):
    if v.release >= (10, 12):
        return
    equation = attrs.get("equation", "")
    if "..." in equation:
        yield f"ellipsis in equation {equation!r} unsupported"
    for term in equation.split("->")[0].split(","):
        letters = term.replace(" ", "").replace(".", "")
        if len(set(letters)) != len(letters):
            yield f"diagonal (repeated index in {letters!r}) unsupported"


@_rule("Pad")
def _pad_mode(node, attrs, g, v):
    if attrs.get("mode", "constant") == "wrap" and v.release < (10, 0):
        yield "mode 'wrap' unsupported before TensorRT 10.0"


@_rule("ScatterElements", "ScatterND")
def _scatter_reduction(node, attrs, g, v):
    reduction = attrs.get("reduction", "none")
    if reduction != "none" and (node.op_type == "ScatterND" or v.release < (10, 0)):
        yield f"reduction {reduction!r} unsupported (only 'none')"


@_rule("LSTM")
def _lstm(node, attrs, g, v):
    if attrs.get("input_forget", 0):
        yield "input_forget=1 unsupported"
    if attrs.get("layout", 0):
        yield "layout=1 unsupported"


@_rule("LpNormalization", "LpPool")
def _lp(node, attrs, g, v):
    if attrs.get("p", 2) not in (1, 2):
        yield f"p={attrs['p']} unsupported (only 1 or 2)"


@_rule("QuantizeLinear", "DequantizeLinear")
def _zero_point(node, attrs, g, v):
    zero = _input(node, 2)
    if zero and g.is_constant(zero) and np.asarray(g.constants[zero]).any():
        yield "zero point must be 0"


def _onnx_type_name(code: int) -> str:
    from onnx import TensorProto

    return TensorProto.DataType.Name(code)


def node_attributes(node: Any) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded)."""
    from onnx import helper

    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {name: value.decode() if isinstance(value, bytes) else value for name, value in values.items()}


def _nodes(graph: Any) -> Iterator[Any]:
    """Every node, depth first through If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [*([attr.g] if attr.HasField("g") else []), *attr.graphs]:
                yield from _nodes(sub)


def _check_node(node: Any, g: _Graph, v: TrtVersion) -> Iterator[str]:
    if node.domain not in DEFAULT_DOMAINS:
        yield f"custom domain {node.domain!r} has no TensorRT importer (it would need a plugin)"
        return
    types = v.ops.get(node.op_type)
    if types is None:
        yield "operator not supported by the TensorRT ONNX parser"
        return
    if node.op_type not in _TYPE_OF_OTHER_INPUT and _input(node, 0):
        t = g.trt_type(node.input[0])
        as_trt = "INT32" if t == "INT64" and v.release < (9, 0) else t  # 8.x runs INT64 as INT32
        if as_trt in v.tensor_types and as_trt not in types:
            yield f"input type {t} unsupported; {node.op_type} takes {', '.join(sorted(types))}"
    attrs = node_attributes(node)
    for rule in _RULES.get(node.op_type, []):
        yield from rule(node, attrs, g, v)


def _type_issues(model: Any, g: _Graph, v: TrtVersion) -> Iterator[Issue]:
    """Tensors whose element type TensorRT lacks (DOUBLE included) or allows only at the graph's edges."""
    for name, onnx_type in sorted(g.types.items()):
        trt = _ONNX_TO_TRT.get(onnx_type)
        if trt == "DOUBLE":
            yield Issue(name, "tensor", "DOUBLE tensor (TensorRT casts it down to FP32 with clamping; export in float32)", (v.name,))
        elif trt is None:
            yield Issue(name, "tensor", f"element type {onnx_type} unsupported; allowed: {', '.join(sorted(v.tensor_types))}", (v.name,))
        elif trt in v.io_only_types and name not in g.io:
            yield Issue(name, "tensor", f"{trt} is supported only on network inputs and outputs", (v.name,))
    if v.release < (9, 0):
        for value in [*model.graph.input, *model.graph.output]:
            if g.types.get(value.name) == "INT64":
                yield Issue(value.name, "tensor", "INT64 network input/output is bound as INT32 by TensorRT 8.x", (v.name,), "warning")
        for name, array in sorted(g.constants.items()):
            consumers = g.consumers.get(name, [])
            clamped_harmlessly = consumers and all(c.op_type == "Slice" and name in c.input[1:3] for c in consumers)
            if array.dtype == np.int64 and array.size and not clamped_harmlessly and np.abs(array).max() > INT32_MAX:
                yield Issue(name, "constant", "INT64 values beyond the INT32 range are clamped by TensorRT 8.x", (v.name,), "warning")


def _merge(issues: Sequence[Issue]) -> list[Issue]:
    """One issue per (node, problem, severity), listing every version it applies to."""
    merged: dict[tuple[str, str, str, str], list[str]] = {}
    for issue in issues:
        merged.setdefault((issue.node, issue.op, issue.problem, issue.severity), []).extend(issue.versions)
    return [Issue(node, op, problem, tuple(dict.fromkeys(versions)), severity) for (node, op, problem, severity), versions in merged.items()]


def check_model(model: str | Path | Any, versions: Sequence[str] = DEFAULT_VERSIONS) -> TrtReport:
    """Check an ONNX file or ``ModelProto`` against TensorRT's ONNX parser for ``versions``."""
    import onnx

    unknown = [name for name in versions if name not in VERSIONS]
    if unknown:
        raise ValueError(f"unknown TensorRT version(s) {unknown}; known: {', '.join(VERSIONS)}")
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except onnx.shape_inference.InferenceError:  # e.g. an unknown custom op: check with the types declared
        pass
    opset = next((o.version for o in proto.opset_import if o.domain in DEFAULT_DOMAINS), 0)
    g = _Graph(proto, opset)
    nodes = list(_nodes(proto.graph))
    issues: list[Issue] = []
    for name in versions:
        v = VERSIONS[name]
        if not v.opsets[0] <= opset <= v.opsets[1]:
            issues.append(Issue("opset", "model", f"opset {opset} outside the supported {v.opsets[0]}..{v.opsets[1]}", (v.name,)))
        for graph_input in proto.graph.input:
            if graph_input.name not in g.constants and not graph_input.type.tensor_type.HasField("shape"):
                issues.append(Issue(graph_input.name, "input", "unknown rank (TensorRT needs the rank of every input)", (v.name,)))
        issues.extend(_type_issues(proto, g, v))
        for i, node in enumerate(nodes):
            issues.extend(Issue(node.name or f"#{i}", node.op_type, problem, (v.name,)) for problem in _check_node(node, g, v))
    return TrtReport(tuple(versions), opset, len(nodes), sorted({n.op_type for n in nodes}), _merge(issues))
