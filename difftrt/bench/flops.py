"""FLOPs of one call of an ONNX graph at given input shapes, counted from the graph itself.

Counted: the multiply-adds of convolutions and matrix products (Conv, ConvTranspose, MatMul, Gemm, and so
the attention Q·Kᵀ and P·V products, which difftrt's graphs write as MatMul), 2 FLOPs per multiply-add —
the work a matmul peak bounds. Not counted: elementwise work, normalisations, softmax (memory-bound, a few
per cent of a U-Net's FLOPs); ops whose shapes inference cannot give are listed under ``uncounted``.

Shapes come from shape inference (ONNX Runtime's symbolic one, else ONNX's) after the graph's dynamic input
dimensions are fixed to the given sizes; weights are not read (external data stays on disk).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _with_input_shapes(model: Any, shapes: Mapping[str, tuple[int, ...]]) -> Any:
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: the caller's model is unchanged
    for value in model.graph.input:
        if value.name not in shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shapes[value.name]):
            raise ValueError(f"input {value.name} has rank {len(dims)}, got shape {shapes[value.name]}")
        for dim, size in zip(dims, shapes[value.name]):
            dim.Clear()
            dim.dim_value = int(size)
    try:  # ONNX Runtime's symbolic inference follows the Shape→Gather→Concat→Reshape chains of attention heads
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except ImportError:  # no onnxruntime (or sympy): plain ONNX inference, which may leave some shapes unknown
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)


def _shapes(model: Any) -> dict[str, tuple[int, ...] | None]:
    known: dict[str, tuple[int, ...] | None] = {}
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        sizes = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
        known[value.name] = None if any(s <= 0 for s in sizes) or not value.type.tensor_type.HasField("shape") else sizes
    for init in model.graph.initializer:
        known[init.name] = tuple(init.dims)
    return known


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_flops(node: Any, shapes: Mapping[str, tuple[int, ...] | None]) -> int | None:
    """FLOPs of one counted node, or None when a shape it needs is unknown."""
    ins = [shapes.get(name) for name in node.input]
    out = shapes.get(node.output[0])
    if node.op_type in ("Conv", "ConvTranspose"):
        w = ins[1]
        if w is None or out is None or ins[0] is None:
            return None
        kernel = math.prod(w[2:])
        if node.op_type == "Conv":  # each output element: (C_in/group)·k multiply-adds; W is (C_out, C_in/g, k...)
            return 2 * math.prod(out) * w[1] * kernel
        # ConvTranspose: each input element scatters into (C_out/group)·k outputs; W is (C_in, C_out/g, k...)
        return 2 * math.prod(ins[0]) * w[1] * kernel
    if node.op_type == "MatMul":
        a = ins[0]
        if a is None or out is None:
            return None
        return 2 * math.prod(out) * a[-1]  # every output element is a K-long dot product
    if node.op_type == "Gemm":
        a = ins[0]
        if a is None or out is None:
            return None
        k = a[0] if int(_attr(node, "transA", 0)) else a[1]
        return 2 * math.prod(out) * k
    return 0


def graph_flops(path: Path, input_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """{"total": FLOPs, "by_op": {op: FLOPs}, "uncounted": {op: nodes}} of one call of the ONNX file at ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inferred = _with_input_shapes(model, input_shapes)
    shapes = _shapes(inferred)
    by_op: dict[str, int] = {}
    uncounted: dict[str, int] = {}
    for node in _all_nodes(inferred.graph):
        if node.op_type not in COUNTED:
            continue
        flops = node_flops(node, shapes)
        if flops is None:
            uncounted[node.op_type] = uncounted.get(node.op_type, 0) + 1
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0) + flops
    return {"total": sum(by_op.values()), "by_op": by_op, "uncounted": uncounted,
            "input_shapes": {k: list(v) for k, v in input_shapes.items()}}


def _all_nodes(graph: Any) -> list[Any]:
    """The graph's nodes, and those of If/Loop/Scan subgraphs (a subgraph's FLOPs count once)."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for a in node.attribute:
            if a.type == a.GRAPH:
                nodes.extend(_all_nodes(a.g))
    return nodes
