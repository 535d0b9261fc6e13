"""FP16-safety pass: which nodes of an exported graph must stay FP32 when TensorRT builds in FP16.

The model's numerics are not changed here. Instead ONNX Runtime runs the graph on real windows
with every intermediate float tensor exposed, and three things are looked for:

- overflow: a node whose output or input exceeds ``65504 / margin`` in magnitude (fp16's
  largest finite value, with headroom for louder input than the windows had);
- accumulators: MatMul/Gemm and sum/mean/L1/L2 reductions and LayerNormalization whose running
  sum of magnitudes (``|A| @ |B|``, ``sum |x|``, ``sum (x - mean)^2``) exceeds the same limit,
  even when the final value fits;
- underflow: the inputs of Log, Div (denominator), Reciprocal, Sqrt and Pow where more than 1%
  of the non-zero values lie below fp16's smallest normal number (6.1e-5), e.g. a power
  spectrum plus a 1e-6 epsilon before the Log. Such an op is pinned, and so is the chain of
  producers that carries those tiny values to it (the power spectrum and mel matrix product),
  up to the first tensor that fp16 represents well.

The result lists ONNX node names for ``model.json`` (``extra.fp16.fp32_nodes``), which the
TensorRT engine builder pins to FP32 with precision constraints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtaudio.tensorrt.ops import node_attributes

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14
DEFAULT_MARGIN = 4.0
UNDERFLOW_FRACTION = 0.01
SENSITIVE_INPUT = {"Log": 0, "Div": 1, "Reciprocal": 0, "Sqrt": 0, "Pow": 0}  # op -> input whose tiny values hurt


@dataclass(frozen=True)
class Finding:
    """Why one node must stay FP32."""

    node: str
    op: str
    kind: str  # overflow | accumulator | underflow | upstream
    value: float
    detail: str


@dataclass
class Fp16Report:
    """Nodes to keep in FP32, the evidence, and what it was measured on."""

    fp32_nodes: list[str]
    findings: list[Finding]
    max_abs: float
    max_abs_node: str
    limit: float
    margin: float
    nodes: int
    checked_on: str

    def to_json(self) -> dict[str, Any]:
        return {
            "fp32_nodes": self.fp32_nodes,
            "max_abs": self.max_abs,
            "max_abs_node": self.max_abs_node,
            "limit": self.limit,
            "margin": self.margin,
            "checked_on": self.checked_on,
            "findings": [asdict(f) for f in self.findings],
        }

    def summary(self) -> str:
        return (
            f"FP16 safety: {len(self.fp32_nodes)} of {self.nodes} nodes must stay FP32 (|x| limit {self.limit:.0f} = "
            f"65504/{self.margin:g}; largest |x| {self.max_abs:.3g} at {self.max_abs_node})"
        )

    def format(self) -> str:
        width = max((len(f.node) for f in self.findings), default=0)
        rows = [f"  {f.node:<{width}}  {f.op:<18} {f.kind:<11} {f.detail}" for f in self.findings]
        return "\n".join([self.summary(), *rows, f"  checked on {self.checked_on}"])


@dataclass
class _Stats:
    max_abs: float = 0.0
    small: int = 0  # non-zero values below FP16_MIN_NORMAL
    nonzero: int = 0

    @property
    def underflow(self) -> float:
        return self.small / self.nonzero if self.nonzero else 0.0


def _axes(node: Any, attrs: dict[str, Any], values: dict[str, np.ndarray], rank: int) -> tuple[int, ...] | None:
    """Reduction axes of a Reduce* node (attribute before opset 18, input for ReduceSum from 13)."""
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = values[node.input[1]].tolist()
    if axes is None or len(axes) == 0:
        return None if attrs.get("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(a % rank for a in axes)


def _accumulator_peak(node: Any, attrs: dict[str, Any], values: dict[str, np.ndarray]) -> float | None:
    """Largest running sum of magnitudes an fp16 accumulator would hold for this node, if it accumulates."""
    op, ins = node.op_type, [values.get(name) for name in node.input]
    if op in ("MatMul", "Gemm") and ins[0] is not None and ins[1] is not None:
        a, b = np.abs(ins[0]), np.abs(ins[1])
        if op == "Gemm":
            a, b = (a.T if attrs.get("transA", 0) else a), (b.T if attrs.get("transB", 0) else b)
            return float((a @ b).max() * abs(attrs.get("alpha", 1.0)))
        return float(np.matmul(a, b).max())
    if op in ("ReduceSum", "ReduceMean", "ReduceL1", "ReduceSumSquare", "ReduceL2") and ins[0] is not None:
        x = ins[0] ** 2 if op in ("ReduceSumSquare", "ReduceL2") else np.abs(ins[0])
        axes = _axes(node, attrs, values, x.ndim)
        return float(x.max() if axes is None else x.sum(axis=axes).max()) if x.size else 0.0
    if op == "LayerNormalization" and ins[0] is not None and ins[0].size:
        x = ins[0]
        axes = tuple(range(attrs.get("axis", -1) % x.ndim, x.ndim))
        return float(((x - x.mean(axis=axes, keepdims=True)) ** 2).sum(axis=axes).max())
    return None


def _float_tensors(proto: Any) -> list[str]:
    """Node outputs whose inferred type is float32 (the ones worth exposing)."""
    from onnx import TensorProto

    typed = {v.name: v.type.tensor_type.elem_type for v in [*proto.graph.value_info, *proto.graph.output]}
    return [out for node in proto.graph.node for out in node.output if out and typed.get(out) == TensorProto.FLOAT]


def _constants(proto: Any) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by name."""
    from onnx import numpy_helper

    found = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    for node in proto.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None:
            found[node.output[0]] = numpy_helper.to_array(value)
    return found


def _probe(proto: Any) -> Any:
    """An ONNX Runtime session returning every float tensor the nodes produce, unfused."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in _float_tensors(proto) if name not in known)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node's own output
    return ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _measure(proto: Any, constants: dict[str, np.ndarray], windows: np.ndarray, batch: int) -> tuple[dict[str, _Stats], dict[str, float]]:
    """Per float tensor: magnitude statistics over all windows; per accumulating node: its peak."""
    session = _probe(proto)
    input_name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    attrs = {node.name: node_attributes(node) for node in proto.graph.node}
    stats: dict[str, _Stats] = {}
    peaks: dict[str, float] = {}

    def add(name: str, array: np.ndarray) -> None:
        if array.dtype != np.float32 or not array.size:
            return
        s, magnitude = stats.setdefault(name, _Stats()), np.abs(array)
        s.max_abs = max(s.max_abs, float(magnitude.max()))
        s.nonzero += int(np.count_nonzero(magnitude))
        s.small += int(np.count_nonzero((magnitude > 0) & (magnitude < FP16_MIN_NORMAL)))

    for name, array in constants.items():
        add(name, array)
    for start in range(0, len(windows), batch):
        feed = windows[start : start + batch]
        values = {input_name: feed, **dict(zip(outputs, session.run(outputs, {input_name: feed})))}
        for name, array in values.items():
            add(name, array)
        values.update(constants)
        for node in proto.graph.node:
            peak = _accumulator_peak(node, attrs[node.name], values)
            if peak is not None:
                peaks[node.name] = max(peaks.get(node.name, 0.0), peak)
    return stats, peaks


def _judge(proto: Any, stats: dict[str, _Stats], peaks: dict[str, float], constants: dict[str, np.ndarray], limit: float) -> list[Finding]:
    """Findings in graph order: overflow, accumulator, underflow and the producers feeding an underflow."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    findings: dict[str, Finding] = {}

    def flag(node: Any, kind: str, value: float, detail: str) -> None:
        findings.setdefault(node.name, Finding(node.name, node.op_type, kind, value, detail))

    for node in proto.graph.node:
        out = stats.get(node.output[0]) if node.output else None
        if out is not None and out.max_abs > limit:
            flag(node, "overflow", out.max_abs, f"|output| reaches {out.max_abs:.4g} > {limit:.0f}")
        hot = [(k, stats[name].max_abs) for k, name in enumerate(node.input) if name in stats and name not in constants and stats[name].max_abs > limit]
        if hot:  # an fp16 copy of this input would already be inf
            flag(node, "overflow", hot[0][1], f"|input {hot[0][0]}| reaches {hot[0][1]:.4g} > {limit:.0f}")
        if peaks.get(node.name, 0.0) > limit:
            flag(node, "accumulator", peaks[node.name], f"running sum of magnitudes reaches {peaks[node.name]:.4g} > {limit:.0f}")
        index = SENSITIVE_INPUT.get(node.op_type)
        if index is None or len(node.input) <= index or node.input[index] not in stats:
            continue
        tiny = stats[node.input[index]].underflow
        if tiny <= UNDERFLOW_FRACTION:
            continue
        flag(node, "underflow", tiny, f"{tiny:.1%} of input {index}'s non-zero values lie below fp16's normal range")
        stack = [node.input[index]]
        while stack:  # walk up the producers while their outputs are still mostly fp16-subnormal
            tensor = stack.pop()
            source = producer.get(tensor)
            if source is None or source.name in findings or stats.get(tensor, _Stats()).underflow <= UNDERFLOW_FRACTION:
                continue
            frac = stats[tensor].underflow
            flag(source, "upstream", frac, f"{frac:.1%} of its output below fp16's normal range, feeds {node.name}")
            stack.extend(name for name in source.input if name in stats and name not in constants)
    order = {node.name: i for i, node in enumerate(proto.graph.node)}
    return sorted(findings.values(), key=lambda f: order[f.node])


def analyse_fp16(model: str | Path | Any, windows: np.ndarray, checked_on: str, margin: float = DEFAULT_MARGIN, batch: int = 4) -> Fp16Report:
    """Run ``model`` (ONNX path or ModelProto, one float input) on ``windows`` and list the nodes fp16 would break."""
    import onnx

    if margin < 1:
        raise ValueError(f"margin {margin} must be >= 1 (the values may use 1/margin of fp16's range)")
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    names = [node.name for node in proto.graph.node]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError("every node needs a unique name (the exporter gives them) so the engine builder can pin it")
    proto = onnx.shape_inference.infer_shapes(proto)
    constants = _constants(proto)
    stats, peaks = _measure(proto, constants, windows.astype(np.float32), batch)
    limit = FP16_MAX / margin
    findings = _judge(proto, stats, peaks, constants, limit)
    produced = [node for node in proto.graph.node if node.output and node.output[0] in stats]
    loudest = max(produced, key=lambda n: stats[n.output[0]].max_abs, default=None)
    return Fp16Report(
        fp32_nodes=[f.node for f in findings],
        findings=findings,
        max_abs=stats[loudest.output[0]].max_abs if loudest else 0.0,
        max_abs_node=loudest.name if loudest else "",
        limit=limit,
        margin=margin,
        nodes=len(proto.graph.node),
        checked_on=checked_on,
    )
