"""Export validation: ONNX Runtime against torch, manifest contents, atomic failure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from difftrt.artifact import open_artifact
from difftrt.fileio import sha256_file
from difftrt.models.specs import component_specs, dims

from .conftest import TINY

torch = pytest.importorskip("torch")


def test_manifest_records_validation_at_two_batch_sizes(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert set(manifest["components"]) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    for name, comp in manifest["components"].items():
        v = comp["validation"]
        batches = {case["dims"]["batch"] for case in v["cases"]}
        assert len(batches) >= 2, name
        assert all(case["passed"] and case["finite"] for case in v["cases"])
        assert 0 <= v["max_abs_err"] < 1e-3 and v["max_rel_err"] < 0.1
        assert manifest["files"][comp["file"]] == sha256_file(export_dir / comp["file"])
    assert manifest["versions"]["torch"] and manifest["versions"]["onnxruntime"]
    assert manifest["scheduler_config"]["_class_name"] == "DDIMScheduler"


@pytest.mark.parametrize("component", ["text_encoder", "unet", "vae_decoder", "vae_encoder"])
def test_onnx_matches_torch_on_fresh_inputs(export_dir, ckpt_dir, component):
    """An independent check at a batch size (4) and seed the exporter never validated."""
    from difftrt.backends.ort import OrtEngine
    from difftrt.backends.torch_ref import component_modules
    from difftrt.models import checkpoint

    spec = component_specs(TINY)[component]
    feeds = spec.sample_inputs(dims(TINY, 4), seed=123)
    got = OrtEngine(export_dir / spec.filename, component).run(feeds)[spec.output_names[0]]
    module = component_modules(checkpoint.load(ckpt_dir))[component]
    with torch.no_grad():
        want = module(*(torch.from_numpy(feeds[n]) for n in spec.input_names)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_unet_accepts_other_latent_sizes(export_dir):
    from difftrt.backends.ort import OrtEngine

    spec = component_specs(TINY)["unet"]
    feeds = spec.sample_inputs(dims(TINY, 2, 12, 4))
    out = OrtEngine(export_dir / "unet.onnx", "unet").run(feeds)["out_sample"]
    assert out.shape == (2, 4, 12, 4)


def test_failed_validation_leaves_nothing(ckpt_dir, tmp_path):
    from difftrt.errors import ValidationError
    from difftrt.exporter.onnx import Tolerance, export_checkpoint
    from difftrt.models import checkpoint

    out = tmp_path / "never"
    with pytest.raises(ValidationError, match="disagrees with torch"):
        export_checkpoint(checkpoint.load(ckpt_dir), out, tol=Tolerance(atol=1e-30, rtol=0.0))
    assert list(tmp_path.iterdir()) == []


def test_open_artifact_reads_back_config(export_dir):
    artifact = open_artifact(export_dir / "unet.onnx")
    assert artifact.config == TINY
    assert artifact.tokenizer().max_length == TINY.text_encoder.max_length
