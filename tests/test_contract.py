"""The manifest is the contract: specs round-trip, drive the runtime, and a file that disagrees is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from difftrt.artifact import open_artifact
from difftrt.errors import ArtifactError, ShapeError
from difftrt.models.specs import ComponentSpec, DimRange, Precision, component_specs
from difftrt.runtime import load_pipeline
from difftrt.train.presets import PRESETS

from .conftest import TINY, infer, ort_engine


@pytest.mark.parametrize("config", [TINY, PRESETS["shapes64"]], ids=["tiny", "shapes64"])
@pytest.mark.parametrize("precision", list(Precision))
def test_spec_round_trips_through_json(config, precision):
    specs = component_specs(config, max_batch=5, precision={"unet": precision, "text_encoder": precision})
    for name, spec in specs.items():
        again = ComponentSpec.from_json(name, json.loads(json.dumps(spec.to_json())))
        assert again == spec


def test_unet_batch_range_is_twice_the_images():
    """Guidance runs [∅ rows; c rows] in one U-Net call: 2 rows per image."""
    for max_batch in (1, 4, 16):
        specs = component_specs(TINY, max_batch=max_batch)
        images = specs["vae_decoder"].dim_range("batch")
        assert specs["text_encoder"].dim_range("batch") == images
        assert specs["unet"].dim_range("batch") == DimRange("batch", 1, 2 * images.opt, 2 * images.max)


def test_precision_sets_float_io_dtypes_but_not_the_timestep():
    unet = component_specs(TINY, precision={"unet": Precision.FP16})["unet"]
    assert {t.name: t.dtype for t in unet.inputs} == {"sample": "float16", "timestep": "float32",
                                                      "encoder_hidden_states": "float16"}
    assert unet.outputs[0].dtype == "float16" and unet.precision is Precision.FP16
    assert Precision.BF16.io_dtype == "float32"  # NumPy has no bfloat16: the graph casts inside


def test_the_export_records_the_specs_it_was_given(export_dir):
    artifact = open_artifact(export_dir)
    assert artifact.specs == component_specs(TINY)
    manifest = json.loads((export_dir / "manifest.json").read_text())
    unet = manifest["components"]["unet"]
    assert unet["precision"] == "fp32"
    # tiny: U-Net factor 2, default latent 8; 8 images -> 16 U-Net rows; sides 2..16 (2x the default)
    assert unet["dim_ranges"] == [["batch", 1, 2, 16], ["latent_height", 2, 8, 16], ["latent_width", 2, 8, 16]]
    assert manifest["components"]["vae_encoder"]["dim_ranges"] == [
        ["batch", 1, 1, 8], ["image_height", 4, 16, 32], ["image_width", 4, 16, 32]]


def test_the_runtime_takes_ranges_from_the_manifest_not_the_config(edited_export):
    def narrow(m):
        m["components"]["vae_decoder"]["dim_ranges"][0] = ["batch", 1, 1, 2]

    artifact = open_artifact(edited_export(narrow))
    assert artifact.specs["vae_decoder"].dim_range("batch") == DimRange("batch", 1, 1, 2)
    assert artifact.specs["unet"] == component_specs(TINY)["unet"]


def test_export_records_the_tracer_warnings(export_dir):
    warnings = json.loads((export_dir / "manifest.json").read_text())["export_warnings"]
    assert set(warnings) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    group_norm = [w for w in warnings["vae_decoder"] if w["source"].startswith("torch/nn/functional.py")]
    assert group_norm and all(w["benign"] and w["category"] == "TracerWarning" for w in group_norm)


@pytest.fixture
def edited_export(export_dir, tmp_path):
    """A copy of the export whose manifest a test may edit (the manifest is not in its own hash list)."""
    dst = tmp_path / "export"
    shutil.copytree(export_dir, dst)

    def edit(change):
        manifest = json.loads((dst / "manifest.json").read_text())
        change(manifest)
        (dst / "manifest.json").write_text(json.dumps(manifest))
        return dst

    return edit


def test_a_dtype_mismatch_names_tensor_expected_and_found(edited_export):
    def to_fp16(m):
        m["components"]["unet"]["inputs"][0]["dtype"] = "float16"

    with pytest.raises(ArtifactError) as err:
        load_pipeline(edited_export(to_fp16))
    assert "unet/model.onnx is not the unet its manifest describes: input sample is float32 (batch, 4, latent_height, " \
           "latent_width) in the file, float16 (batch, 4, latent_height, latent_width) in the manifest" in str(err.value)


def test_a_rank_mismatch_is_refused(edited_export):
    def drop_axis(m):
        m["components"]["vae_decoder"]["outputs"][0]["shape"] = ["batch", 3, "image_height"]

    with pytest.raises(ArtifactError, match="output sample is float32 .* in the file, float32 "
                                            r"\(batch, 3, image_height\) in the manifest"):
        load_pipeline(edited_export(drop_axis))


def test_a_fixed_size_mismatch_is_refused(edited_export):
    def channels(m):
        m["components"]["unet"]["inputs"][0]["shape"][1] = 8

    with pytest.raises(ArtifactError, match=r"input sample is float32 \(batch, 4, .* float32 \(batch, 8, "):
        load_pipeline(edited_export(channels))


def test_a_malformed_spec_entry_is_one_message(edited_export):
    def unknown_precision(m):
        m["components"]["unet"]["precision"] = "fp8"

    with pytest.raises(ArtifactError, match="the unet entry of the manifest is malformed"):
        load_pipeline(edited_export(unknown_precision))


def test_bind_checks_rank_fixed_sizes_and_consistency():
    unet = component_specs(TINY)["unet"]
    good = {"sample": (2, 4, 8, 6), "timestep": (2,), "encoder_hidden_states": (2, 12, 32)}
    assert unet.bind(good) == {"batch": 2, "latent_height": 8, "latent_width": 6}
    with pytest.raises(ShapeError, match=r"unet: input sample has rank 3 \(2, 4, 8\), expected rank 4"):
        unet.bind({**good, "sample": (2, 4, 8)})
    with pytest.raises(ShapeError, match="unet: input sample axis 1 is 3, expected 4"):
        unet.bind({**good, "sample": (2, 3, 8, 6)})
    with pytest.raises(ShapeError, match="unet: dimension batch is 2 in one input and 3 in timestep"):
        unet.bind({**good, "timestep": (3,)})
    with pytest.raises(ShapeError, match="inputs"):
        unet.bind({"sample": (2, 4, 8, 6)})
    assert unet.out_of_range({"batch": 40, "latent_height": 8}) == ["batch 40 (range 1-16)"]


def test_engine_lifecycle_order(export_dir):
    engine = ort_engine(export_dir, "vae_decoder")
    spec = engine.spec
    feeds = spec.sample_inputs({"batch": 1, "latent_height": 8, "latent_width": 8})
    with pytest.raises(RuntimeError, match="load called at stage ACTIVE"):
        engine.load()
    with pytest.raises(RuntimeError, match="infer before allocate"):
        engine.infer(feeds)
    engine.allocate({"latent_sample": (1, 4, 8, 8)})
    assert engine.infer(feeds)["sample"].shape == (1, 3, 16, 16)
    with pytest.raises(ShapeError, match=r"latent_sample is float32 \(2, 4, 8, 8\), the engine is allocated for "
                                         r"float32 \(1, 4, 8, 8\)"):
        engine.infer(spec.sample_inputs({"batch": 2, "latent_height": 8, "latent_width": 8}))
    with pytest.raises(ShapeError, match="latent_sample is float64"):
        engine.infer({"latent_sample": feeds["latent_sample"].astype(np.float64)})
    engine.close()
    with pytest.raises(RuntimeError, match="infer before allocate"):
        engine.infer(feeds)


def test_an_engine_that_holds_only_its_profile_refuses_other_sizes(export_dir):
    """A TensorRT plan holds only its profile's shapes; the base class enforces that for such engines."""
    from difftrt.backends.ort import OrtEngine

    class ProfileBoundOrt(OrtEngine):  # the real ONNX Runtime engine, with the range rule of a built plan
        enforces_ranges = True

    artifact = open_artifact(export_dir)
    engine = ProfileBoundOrt(artifact.path("vae_decoder"), artifact.specs["vae_decoder"])
    engine.ready({"latent_sample": (8, 4, 16, 16)})  # the max corner
    with pytest.raises(ShapeError, match="vae_decoder: batch 9 \\(range 1-8\\): outside what .* was built for"):
        engine.ready({"latent_sample": (9, 4, 16, 16)})


def test_a_file_that_froze_a_dynamic_size_is_refused(edited_export, tmp_path):
    """The manifest says latent_sample's batch is dynamic; a file with batch fixed at 2 is not that decoder."""
    onnx = pytest.importorskip("onnx")
    folder = edited_export(lambda m: None)
    model = onnx.load(str(folder / "vae_decoder" / "model.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(model, str(folder / "vae_decoder" / "model.onnx"))
    from tests.test_bad_input import rehash

    rehash(folder, "vae_decoder/model.onnx")
    with pytest.raises(ArtifactError, match=r"input latent_sample is float32 \(2, 4, latent_height, latent_width\) in "
                                            r"the file, float32 \(batch, 4, latent_height, latent_width\)"):
        load_pipeline(folder)


def test_a_backend_failure_is_one_message(export_dir):
    """A latent side that is no multiple of the U-Net's factor fails inside ONNX Runtime (a skip concat)."""
    from difftrt.errors import EngineError

    engine = ort_engine(export_dir, "unet")
    feeds = engine.spec.sample_inputs({"batch": 1, "latent_height": 5, "latent_width": 5})
    with pytest.raises(EngineError, match=r"^unet: ONNX Runtime failed on \{'sample': \(1, 4, 5, 5\).*"):
        infer(engine, feeds)


def test_ort_warns_outside_the_validated_range(export_dir, caplog):
    engine = ort_engine(export_dir, "vae_decoder")
    engine.ready({"latent_sample": (9, 4, 8, 8)})
    assert "batch 9 (range 1-8): outside the range validated at export" in caplog.text
