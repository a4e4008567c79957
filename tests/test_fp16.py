"""fp16 exports: validated against the fp32 torch model, non-finite values caught, image-level drift bounded."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from difftrt.cli import main
from difftrt.pipeline import SampleRequest
from difftrt.runtime import load_pipeline
from difftrt.schedulers import from_config

from .conftest import psnr

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")


def test_fp16_manifest_records_precision_io_dtypes_and_validation(export_fp16_dir):
    manifest = json.loads((export_fp16_dir / "manifest.json").read_text())
    precisions = {name: c["precision"] for name, c in manifest["components"].items()}
    assert precisions == {"text_encoder": "fp16", "unet": "fp16", "vae_decoder": "fp32", "vae_encoder": "fp32"}
    unet = manifest["components"]["unet"]
    assert {t["name"]: t["dtype"] for t in unet["inputs"]} == {"sample": "float16", "timestep": "float32",
                                                               "encoder_hidden_states": "float16"}
    for name, comp in manifest["components"].items():
        v = comp["validation"]
        assert v["reference"] == "torch fp32" and v["nonfinite"] == 0 and v["precision"] == comp["precision"]
        fp32 = {"atol": 3e-4 if name.startswith("vae") else 1e-4, "rtol": 1e-3}  # the VAE's bound is optimum's
        assert v["tolerance"] == ({"atol": 2e-2, "rtol": 2e-2} if comp["precision"] == "fp16" else fp32)


@pytest.mark.parametrize("component", ["unet", "text_encoder"])
def test_fp16_onnx_matches_the_fp32_torch_model_on_fresh_inputs(export_fp16_dir, ckpt_dir, component):
    """An independent check, at a batch and seed the exporter never validated: fp16 ONNX vs fp32 torch."""
    from difftrt.models import checkpoint
    from difftrt.models.specs import component_specs, dims

    from .conftest import TINY, infer, ort_engine

    engine = ort_engine(export_fp16_dir, component)
    feeds = engine.spec.sample_inputs(dims(TINY, 5), seed=99)
    got = infer(engine, feeds)[engine.spec.output_names[0]].astype(np.float32)
    spec32 = component_specs(TINY)[component]
    module = checkpoint.load(ckpt_dir).component_modules()[component]
    with torch.no_grad():
        want = module(*(torch.from_numpy(feeds[t.name].astype(t.dtype)) for t in spec32.inputs)).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)
    assert np.abs(got - want).max() > 0  # it is not the fp32 graph


def test_the_fp16_graph_is_fp16_with_fp32_islands(export_fp16_dir):
    """Independent of our manifest: the ONNX file's own declared types, and the inferred input type of every
    normalisation and softmax node (fp32) next to the convolutions' (fp16)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(export_fp16_dir / "unet" / "model.onnx")))
    declared = {i.name: onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type) for i in model.graph.input}
    assert declared == {"sample": "FLOAT16", "timestep": "FLOAT", "encoder_hidden_states": "FLOAT16"}
    init = {t.name: onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer}
    heavy = {name for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm") for name in n.input if name in init}
    assert heavy and {init[name] for name in heavy} == {"FLOAT16"}  # convolution and matmul weights
    types = {v.name: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
             for v in (*model.graph.value_info, *model.graph.input)}
    input_types = lambda ops: {types.get(n.input[0]) for n in model.graph.node if n.op_type in ops}  # noqa: E731
    assert input_types({"Softmax"}) == {"FLOAT"}
    assert input_types({"InstanceNormalization", "LayerNormalization"}) == {"FLOAT"}  # GroupNorm, LayerNorm
    assert input_types({"Conv"}) == {"FLOAT16"}


def test_fp16_sampling_stays_close_to_fp32(export_dir, export_fp16_dir):
    """Same seed through both exports: latents close, images at PSNR >= 35 dB (the issue's bar)."""
    req = SampleRequest("a red circle on the left", steps=8, guidance=5.0, seed=4, num_images=2)
    images = {}
    for name, folder in (("fp32", export_dir), ("fp16", export_fp16_dir)):
        pipe, artifact = load_pipeline(folder)
        result = pipe(req, from_config(artifact.scheduler_config))
        assert np.isfinite(result.latents).all()
        images[name] = result
    assert np.abs(images["fp16"].latents - images["fp32"].latents).max() < 5e-2
    assert psnr(images["fp16"].images, images["fp32"].images) >= 35


def test_an_fp16_overflow_fails_the_export_naming_the_component(ckpt_dir, tmp_path):
    """Weights that push the U-Net's output past fp16's 65504: fp32 is fine, fp16 turns to inf and is refused."""
    from difftrt.errors import ValidationError
    from difftrt.exporter.onnx import export_checkpoint
    from difftrt.models import checkpoint
    from difftrt.models.specs import Precision

    ckpt = checkpoint.load(ckpt_dir)
    with torch.no_grad():
        ckpt.unet.conv_out.weight.mul_(1e6)
    out = tmp_path / "never"
    with pytest.raises(ValidationError, match=r"^unet: the fp16 ONNX output has \d+ NaN/inf values at "):
        export_checkpoint(ckpt, out, precision={"unet": Precision.FP16})
    assert list(tmp_path.iterdir()) == []


def test_export_cli_vae_precision(ckpt_dir, tmp_path):
    result = CliRunner().invoke(main, ["export", "--ckpt", str(ckpt_dir), "--out", str(tmp_path / "e"), "--json",
                                       "--precision", "fp16", "--vae-precision", "fp16", "--max-batch", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["validation"]
    assert {c["precision"] for c in summary.values()} == {"fp16"}
    bad = CliRunner().invoke(main, ["export", "--ckpt", str(ckpt_dir), "--out", str(tmp_path / "f"), "--precision", "fp8"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: Invalid value for '--precision'")
    shutil.rmtree(tmp_path / "e")
