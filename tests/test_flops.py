"""FLOP counting from ONNX graphs: a hand count on a small graph, and torch's own FlopCounterMode on the
exported U-Net (an independent count of the same convolutions and matrix products)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from difftrt.bench.flops import graph_flops  # noqa: E402


def small_graph(path):
    """x (N, 3, 8, 8) -Conv 3x3 (4 filters, pad 1)-> (N, 4, 8, 8) -reshape/transpose-> (N, 64, 4) -MatMul B (4, 5)->
    (N, 64, 5); and a Gemm of y (2, 6) with Bᵀ given as (7, 6), transB=1 -> (2, 7)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([0, 4, 64], dtype=np.int64), "shape"),
             numpy_helper.from_array(rng.standard_normal((7, 6)).astype(np.float32), "g")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "b"], ["m"]),
             helper.make_node("Gemm", ["y", "g"], ["z"], transB=1)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8]),
                                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])],
                              [helper.make_tensor_value_info("m", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("n", [1, 3])
def test_hand_count(tmp_path, n):
    small_graph(tmp_path / "g.onnx")
    got = graph_flops(tmp_path / "g.onnx", {"x": (n, 3, 8, 8), "y": (2, 6)})
    conv = 2 * n * 4 * 8 * 8 * (3 * 3 * 3)  # outputs × (C_in · kH · kW) multiply-adds
    matmul = 2 * n * 64 * 5 * 4  # outputs × K
    gemm = 2 * 2 * 7 * 6
    assert got["by_op"] == {"Conv": conv, "MatMul": matmul, "Gemm": gemm}
    assert got["total"] == conv + matmul + gemm and got["uncounted"] == {}


@pytest.mark.parametrize("component", ["unet", "vae_decoder", "text_encoder"])
def test_exported_graph_matches_torch_flop_counter(export_dir, ckpt_dir, component):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from difftrt.artifact import open_artifact
    from difftrt.models import checkpoint

    artifact = open_artifact(export_dir, component)
    spec = artifact.specs[component]
    feeds = spec.sample_inputs(spec.profile("opt"), 0)
    module = checkpoint.load(ckpt_dir).component_modules()[component]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs))
    counted = graph_flops(artifact.path(component), {k: v.shape for k, v in feeds.items()})
    assert counted["uncounted"] == {}
    assert counted["total"] == counter.get_total_flops()
