"""ONNX weights in an external file (what a component over protobuf's 2 GiB limit needs): gathered into one
model.onnx.data per component subfolder, hashed with the export, read by ONNX Runtime and TensorRT's parser."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from difftrt.cli import main

onnx = pytest.importorskip("onnx")


def matmul_model(path, w, b):
    """y = x @ w + b, with both as initialisers written one file per tensor (as torch's exporter does above 2 GiB)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, w.shape[1]])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)


def test_separate_tensor_files_become_one_data_file(tmp_path):
    import onnxruntime as ort

    from difftrt.exporter.external_data import DATA_FILE, gather_external_data

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((64, 48), dtype=np.float32), rng.standard_normal(48, dtype=np.float32)
    path = tmp_path / "model.onnx"
    matmul_model(path, w, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "model.onnx", "w"]
    assert gather_external_data(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", DATA_FILE]
    x = rng.standard_normal((3, 64), dtype=np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ w + b, rtol=1e-5, atol=1e-5)


def test_constants_join_the_data_file_at_aligned_offsets(tmp_path):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    from difftrt.exporter.external_data import ALIGN, DATA_FILE, gather_external_data

    rng = np.random.default_rng(1)
    w, k = rng.standard_normal((32, 32), dtype=np.float32), rng.standard_normal(32, dtype=np.float32)
    constant = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(k, "k"))
    graph = helper.make_graph(
        [constant, helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "k"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])], [numpy_helper.from_array(w, "w")])
    path = tmp_path / "model.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    convert_model_to_external_data(model, all_tensors_to_one_file=False, size_threshold=0, convert_attribute=True)
    onnx.save_model(model, str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "model.onnx", "w"]  # the Constant's too
    assert gather_external_data(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", DATA_FILE]
    model = onnx.load(str(path), load_external_data=False)
    offsets = [int(e.value) for t in [*model.graph.initializer, model.graph.node[0].attribute[0].t]
               for e in t.external_data if e.key == "offset"]
    assert len(offsets) == 2 and all(o % ALIGN == 0 for o in offsets)
    x = rng.standard_normal((2, 32), dtype=np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ w + k, rtol=1e-5, atol=1e-5)


def test_a_single_file_component_keeps_its_own_digest(export_dir):
    """So plan-cache keys of exports without external data are what they were."""
    from difftrt.artifact import component_digest

    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert component_digest(manifest, "unet") == manifest["files"]["unet/model.onnx"]["sha256"]


def test_inline_models_stay_inline_unless_asked(tmp_path):
    from difftrt.exporter.external_data import gather_external_data

    path = tmp_path / "model.onnx"
    matmul_model(path, np.ones((4, 4), np.float32), np.zeros(4, np.float32))
    onnx.save_model(onnx.load(str(path)), str(path))  # weights back inline
    for p in (tmp_path / "w", tmp_path / "b"):
        p.unlink()
    assert not gather_external_data(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.fixture(scope="module")
def external_export(ckpt_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ext") / "tiny-ext"
    result = CliRunner().invoke(main, ["export", "--ckpt", str(ckpt_dir), "--out", str(out), "--external-data", "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_export_with_external_data_is_hashed_and_samples_the_same(external_export, export_dir, tmp_path):
    from difftrt.artifact import component_digest

    manifest = json.loads((external_export / "manifest.json").read_text())
    for name, component in manifest["components"].items():
        data = f"{name}/model.onnx.data"
        assert component["external_data"] == data and data in manifest["files"]
        assert (external_export / data).stat().st_size > (external_export / component["file"]).stat().st_size
        assert component_digest(manifest, name) != manifest["files"][component["file"]]["sha256"]
    images = []
    for export in (external_export, export_dir):
        out = tmp_path / f"{export.name}.png"
        result = CliRunner().invoke(main, ["sample", "--engine", str(export), "--steps", "3", "--out", str(out), "-q"])
        assert result.exit_code == 0, result.output
        images.append(out.read_bytes())
    assert images[0] == images[1]  # the same weights, wherever they are stored


def test_a_changed_data_file_is_caught(external_export, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(external_export, copy)
    data = copy / "unet" / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    result = CliRunner().invoke(main, ["sample", "--engine", str(copy), "--steps", "1", "--verify",
                                       "--out", str(tmp_path / "o.png")])
    assert result.exit_code != 0 and "model.onnx.data does not match the sha256" in result.output


def test_tensorrt_parses_external_data(external_export, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="needs tensorrt-rtx: pip install 'difftrt[tensorrt-rtx]'")
    from .conftest import build_engines

    out = build_engines(external_export, tmp_path / "engines", "--arch", "sm86", "--max-batch", "1")
    manifest = json.loads((out / "manifest.json").read_text())
    assert {p["component"] for p in manifest["plans"]} == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
