"""Component adapters: tensor names, dtype casts and the lifecycle, on real ONNX Runtime sessions."""

from __future__ import annotations

import numpy as np
import pytest

from difftrt.adapters import Adapter, UNetAdapter
from difftrt.backends.ort import OrtEngine
from difftrt.models.specs import ComponentSpec, DimRange, Precision, TensorSpec

from .conftest import infer, ort_engine

onnx = pytest.importorskip("onnx")


def fp16_doubler(path):
    """y = 2·x as an fp16 graph with fp16 I/O: ONNX Runtime refuses float32 feeds to it."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("latent_sample", TensorProto.FLOAT16, ["batch", 4])
    y = helper.make_tensor_value_info("sample", TensorProto.FLOAT16, ["batch", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT16, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["latent_sample", "two"], ["sample"])], "doubler", [x], [y], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    spec = ComponentSpec("vae_decoder", (TensorSpec("latent_sample", "float16", ("batch", 4)),),
                         (TensorSpec("sample", "float16", ("batch", 4)),), (DimRange("batch", 1, 1, 4),), Precision.FP16)
    return OrtEngine(path, spec)


def test_adapter_casts_to_the_spec_dtype_and_back(tmp_path):
    engine = fp16_doubler(tmp_path / "fp16.onnx")
    x = np.array([[0.1, 1.5, -3.0, 65000.0]], dtype=np.float32)
    engine.ready({"latent_sample": (1, 4)})
    with pytest.raises(Exception, match=r"Unexpected input data type. Actual: \(tensor\(float\)\) , expected: "
                                        r"\(tensor\(float16\)\)"):  # the oracle: ONNX Runtime itself refuses float32
        engine.session.run(None, {"latent_sample": x})
    y = Adapter(engine)(x)
    assert y.dtype == np.float32
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(y, (x.astype(np.float16) * np.float16(2)).astype(np.float32))
    assert np.isinf(y[0, 3])  # 130000 overflows fp16: the adapter does not hide it


def test_unet_adapter_broadcasts_a_scalar_timestep(export_dir):
    engine = ort_engine(export_dir, "unet")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 8, 8), dtype=np.float32)
    context = rng.standard_normal((3, 12, 32), dtype=np.float32)
    direct = infer(engine, {"sample": x, "timestep": np.full(3, 321.0, np.float32), "encoder_hidden_states": context})
    unet = UNetAdapter(engine)
    np.testing.assert_array_equal(unet(x, 321.0, context), direct["out_sample"])
    per_row = np.array([1.0, 500.0, 999.0])
    rows = unet(x, per_row, context)
    for i, t in enumerate(per_row):
        np.testing.assert_allclose(rows[i], unet(x[i:i + 1], t, context[i:i + 1])[0], rtol=1e-5, atol=1e-6)


def test_adapter_reallocates_when_shapes_change(export_dir):
    engine = ort_engine(export_dir, "vae_decoder")
    decode = Adapter(engine)
    assert decode(np.zeros((1, 4, 8, 8), np.float32)).shape == (1, 3, 16, 16)
    assert engine.shapes == {"latent_sample": (1, 4, 8, 8)}
    assert decode(np.zeros((2, 4, 4, 6), np.float64)).shape == (2, 3, 8, 12)  # float64 is cast to the spec's float32
    assert engine.shapes == {"latent_sample": (2, 4, 4, 6)}
