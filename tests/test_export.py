"""Export validation: ONNX Runtime against torch, manifest contents, atomic failure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from difftrt.artifact import open_artifact
from difftrt.fileio import sha256_file
from difftrt.models.specs import component_specs, dims

from .conftest import TINY, infer, ort_engine

torch = pytest.importorskip("torch")


def test_manifest_records_validation_at_the_corners_of_every_range(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert set(manifest["components"]) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    for name, comp in manifest["components"].items():
        v = comp["validation"]
        validated = [case["dims"] for case in v["cases"]]
        for dim, lo, _, hi in comp["dim_ranges"]:
            assert {lo, hi} <= {case[dim] for case in validated}, (name, dim)
        assert {r[0]: r[1] for r in comp["dim_ranges"]} in validated, name  # the min corner itself
        assert {r[0]: r[3] for r in comp["dim_ranges"]} in validated, name  # the max corner itself
        assert all(case["passed"] and case["finite"] for case in v["cases"])
        assert 0 <= v["max_abs_err"] < 1e-3 and v["max_rel_err"] < 0.1
        assert comp["file"] == f"{name}/model.onnx"
        assert manifest["files"][comp["file"]] == {"sha256": sha256_file(export_dir / comp["file"]),
                                                   "size": (export_dir / comp["file"]).stat().st_size}
    assert manifest["versions"]["torch"] and manifest["versions"]["onnxruntime"]
    assert manifest["scheduler_config"]["_class_name"] == "DDIMScheduler"


@pytest.mark.parametrize("component", ["text_encoder", "unet", "vae_decoder", "vae_encoder"])
def test_onnx_matches_torch_on_fresh_inputs(export_dir, ckpt_dir, component):
    """An independent check at a batch size (4) and seed the exporter never validated."""
    from difftrt.models import checkpoint

    spec = component_specs(TINY)[component]
    feeds = spec.sample_inputs(dims(TINY, 4), seed=123)
    got = infer(ort_engine(export_dir, component), feeds)[spec.output_names[0]]
    module = checkpoint.load(ckpt_dir).component_modules()[component]
    with torch.no_grad():
        want = module(*(torch.from_numpy(feeds[n]) for n in spec.input_names)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_unet_accepts_other_latent_sizes(export_dir):
    spec = component_specs(TINY)["unet"]
    feeds = spec.sample_inputs(dims(TINY, 2, 12, 4))
    out = infer(ort_engine(export_dir, "unet"), feeds)["out_sample"]
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
    artifact = open_artifact(export_dir / "unet" / "model.onnx")
    assert artifact.config == TINY
    assert artifact.tokenizer().max_length == TINY.text_encoder.max_length
