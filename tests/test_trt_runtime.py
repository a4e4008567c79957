"""The TensorRT runtime backend: its pure logic on real plans built on CPU with TensorRT-RTX (profiles from the
engine manifest, the profile choice, buffer sizes, dtype names, declared I/O of TensorRT's own parse of the
export), the checks before a plan runs, and `difftrt sample` reaching the backend. Sampling through ``TrtEngine``
on a GPU is in test_trt_gpu.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types

import numpy as np
import pytest
from click.testing import CliRunner

from difftrt.artifact import Verify, open_artifact
from difftrt.backends.base import Stage, check_engine_matches
from difftrt.cli import main
from difftrt.errors import ArtifactError, DependencyError, EngineError, ShapeError, UsageError
from difftrt.trt.binding import (DTYPES, buffer_plan, check_profiles_match, choose_profile, declared_io, trt_dtype_name,
                                 engine_profiles, manifest_profiles)
from difftrt.trt.engine_folder import check_runnable, open_engine_folder
from tests.conftest import build_engines

trt = pytest.importorskip("tensorrt_rtx", reason="needs tensorrt-rtx: pip install 'difftrt[tensorrt-rtx]'")

HAS_CUPY = importlib.util.find_spec("cupy") is not None


def build(export, out, *options):
    """``difftrt build`` quietly (this GPU's TensorRT, or TensorRT-RTX for the ``--arch`` given)."""
    return build_engines(export, out, "-q", *options)


@pytest.fixture(scope="module")
def static_dirs(export_dir, tmp_path_factory):
    """Two static engine folders: 1 image at 16 px (U-Net 2 rows, latents 8x8) and 2 images at 32 px (4 rows, 16x16)."""
    root = tmp_path_factory.mktemp("static")
    return (build(export_dir, root / "s16", "--arch", "sm86", "--static", "--max-batch", "1", "--sizes", "16"),
            build(export_dir, root / "s32", "--arch", "sm86", "--static", "--max-batch", "2", "--sizes", "32"))


def unet_profiles(folder, arch="sm86"):
    artifact = open_engine_folder(folder, arch)
    return manifest_profiles(artifact.plan("unet"), artifact.specs["unet"])


def unet_shapes(batch, side):
    return {"sample": (batch, 4, side, side), "timestep": (batch,), "encoder_hidden_states": (batch, 12, 32)}


# -- dtype names -----------------------------------------------------------------------------------------------

def test_every_tensorrt_datatype_has_a_numpy_name_that_agrees_with_tensorrts_own():
    members = dict(trt.DataType.__members__)
    assert set(members) <= set(DTYPES)
    for name, member in members.items():
        try:
            numpy_type = trt.nptype(member)  # TensorRT's own mapping, where NumPy has the type
        except TypeError:
            numpy_type = None
        if numpy_type is not None:
            assert trt_dtype_name(member) == np.dtype(numpy_type).name, name
    assert [trt_dtype_name(trt.DataType.__members__[m]) for m in ("FLOAT", "HALF", "BF16", "INT32", "INT64", "BOOL")] == [
        "float32", "float16", "bfloat16", "int32", "int64", "bool"]
    with pytest.raises(ArtifactError, match="TensorRT type COMPLEX, which difftrt does not map"):
        trt_dtype_name(types.SimpleNamespace(name="COMPLEX"))


# -- declared I/O: what TensorRT's parser makes of the exported ONNX, read through the ICudaEngine methods ----

class ParsedNetwork:
    """The I/O methods of ``ICudaEngine`` answered from a real ``INetworkDefinition``: TensorRT-RTX's strongly
    typed parse of an exported ONNX file (what the plan is built from, on CPU), with the profile the build sets."""

    def __init__(self, onnx_path, profile_shapes=None):
        self.logger = trt.Logger(trt.Logger.ERROR)
        self.builder = trt.Builder(self.logger)
        self.network = self.builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        self.parser = trt.OnnxParser(self.network, self.logger)
        assert self.parser.parse_from_file(str(onnx_path))
        ins = [self.network.get_input(i) for i in range(self.network.num_inputs)]
        outs = [self.network.get_output(i) for i in range(self.network.num_outputs)]
        self.tensors = {t.name: (t, trt.TensorIOMode.INPUT) for t in ins} | {t.name: (t, trt.TensorIOMode.OUTPUT) for t in outs}
        self.names = [t.name for t in ins + outs]
        self.profiles = []
        for shapes in profile_shapes or ():
            profile = self.builder.create_optimization_profile()
            for name, (lo, opt, hi) in shapes.items():
                profile.set_shape(name, lo, opt, hi)
            self.profiles.append(profile)

    num_io_tensors = property(lambda self: len(self.names))
    num_optimization_profiles = property(lambda self: len(self.profiles))

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.tensors[name][1]

    def get_tensor_dtype(self, name):
        return self.tensors[name][0].dtype

    def get_tensor_shape(self, name):
        return self.tensors[name][0].shape

    def get_tensor_profile_shape(self, name, index):
        return self.profiles[index].get_shape(name)


@pytest.mark.parametrize("component", ["text_encoder", "unet", "vae_decoder", "vae_encoder"])
def test_declared_io_of_the_parsed_fp16_export_is_its_manifest_spec(export_fp16_dir, component):
    artifact = open_artifact(export_fp16_dir, component)
    spec = artifact.specs[component]
    inputs, outputs = declared_io(trt, ParsedNetwork(artifact.path(component)))
    check_engine_matches((inputs, outputs), spec, str(artifact.path(component)))
    assert [(t.name, t.dtype) for t in inputs] == [(t.name, t.dtype) for t in spec.inputs]
    if component == "unet":
        assert inputs[0].shape == (None, 4, None, None) and inputs[0].dtype == "float16"
        assert inputs[1].dtype == "float32" and outputs[0].dtype == "float16"  # the timestep stays fp32


def test_a_plan_whose_io_is_not_the_manifest_spec_is_refused(export_dir, export_fp16_dir):
    fp32 = open_artifact(export_dir, "unet").specs["unet"]
    io16 = declared_io(trt, ParsedNetwork(open_artifact(export_fp16_dir, "unet").path("unet")))
    with pytest.raises(ArtifactError, match=r"input sample is float16 \(\?, 4, \?, \?\) in the file, float32 "
                                            r"\(batch, 4, latent_height, latent_width\) in the manifest"):
        check_engine_matches(io16, fp32, "unet.sm86.plan")


def test_the_plans_profiles_are_checked_against_the_manifests(engines_dir, export_dir):
    artifact = open_engine_folder(engines_dir, "sm86")
    spec, recorded = artifact.specs["unet"], unet_profiles(engines_dir)
    onnx = open_artifact(export_dir, "unet").path("unet")
    held = engine_profiles(ParsedNetwork(onnx, [recorded[0].shapes]), spec)
    assert held == recorded
    check_profiles_match(recorded, held, "unet.sm86.plan", "difftrt build ...")
    other = engine_profiles(ParsedNetwork(onnx, [unet_profiles(engines_dir)[0].shapes | {
        "sample": ((1, 4, 2, 2), (2, 4, 8, 8), (4, 4, 12, 12))}]), spec)
    with pytest.raises(ArtifactError, match=r"unet.sm86.plan: its optimisation profiles differ from its manifest's "
                                            r"\(input sample: .* recorded, .*\(4, 4, 12, 12\)\) in the plan\); rebuild: x"):
        check_profiles_match(recorded, other, "unet.sm86.plan", "x")


# -- profiles from the engine manifest, and the choice among them ----------------------------------------------

def test_profiles_come_from_the_plan_entry_of_the_manifest(engines_dir):
    (unet,) = unet_profiles(engines_dir)
    # --max-batch 2: U-Net rows 1..4 (opt 2); latents 2..16 (opt 8), the tiny export's own spatial range
    assert dict(unet.shapes) == {"sample": ((1, 4, 2, 2), (2, 4, 8, 8), (4, 4, 16, 16)),
                                 "timestep": ((1,), (2,), (4,)),
                                 "encoder_hidden_states": ((1, 12, 32), (2, 12, 32), (4, 12, 32))}
    assert not unet.static and unet.axes["sample"] == ("batch", 4, "latent_height", "latent_width")
    manifest = json.loads((engines_dir / "manifest.json").read_text())
    entry = next(p for p in manifest["plans"] if p["component"] == "text_encoder" and p["arch"] == "sm89")
    (te,) = manifest_profiles(entry, open_engine_folder(engines_dir, "sm89").specs["text_encoder"])
    assert dict(te.shapes) == {"input_ids": ((1, 12), (1, 12), (2, 12))}
    with pytest.raises(ArtifactError, match="the unet plan entry has no readable profile"):
        manifest_profiles({**entry, "profile": None}, open_engine_folder(engines_dir, "sm86").specs["unet"])
    with pytest.raises(ArtifactError, match=r"the unet profile ranges \['batch'\], its spec \['batch', 'latent_height'"):
        manifest_profiles({**entry, "profile": [["batch", 1, 1, 2]]}, open_engine_folder(engines_dir, "sm86").specs["unet"])


def test_choose_profile_on_one_real_profile(engines_dir):
    profiles = unet_profiles(engines_dir)
    assert choose_profile(profiles, unet_shapes(2, 8)) == 0
    assert choose_profile(profiles, unet_shapes(1, 2)) == 0 and choose_profile(profiles, unet_shapes(4, 16)) == 0
    with pytest.raises(ShapeError) as err:
        choose_profile(profiles, unet_shapes(5, 8))
    assert str(err.value) == ("unet: input sample axis 0 (batch 5) is outside what the plan was built for (the plan's "
                              "profile takes 1-4); rebuild the plans to hold it: difftrt build --max-batch N (images per "
                              "call)")
    with pytest.raises(ShapeError, match=r"input sample axis 2 \(latent_height 18\) is outside what the plan was built "
                                         r"for \(the plan's profile takes 2-16\); rebuild the plans to hold it: difftrt "
                                         r"build --sizes PX,... \(pixel sizes\)$"):
        choose_profile(profiles, unet_shapes(2, 18))
    with pytest.raises(ShapeError, match=r"input sample has rank 3 \(2, 4, 8\), the plan takes rank 4 "
                                         r"\(batch, 4, latent_height, latent_width\)"):
        choose_profile(profiles, unet_shapes(2, 8) | {"sample": (2, 4, 8)})
    with pytest.raises(ShapeError, match=r"inputs \['sample'\] given, the plan takes"):
        choose_profile(profiles, {"sample": (2, 4, 8, 8)})


def test_choose_profile_among_real_static_and_dynamic_ones(engines_dir, static_dirs):
    s16, s32 = (unet_profiles(d)[0] for d in static_dirs)
    (dynamic,) = unet_profiles(engines_dir)
    assert s16.static and s32.static and dict(s16.shapes)["sample"] == ((2, 4, 8, 8),) * 3
    profiles = (s16, s32, dynamic)
    assert choose_profile(profiles, unet_shapes(2, 8)) == 0  # the first that holds it
    assert choose_profile(profiles, unet_shapes(4, 16)) == 1
    assert choose_profile(profiles, unet_shapes(3, 12)) == 2
    with pytest.raises(ShapeError, match=r"input sample axis 3 \(latent_width 20\) is outside .* \(its profiles take "
                                         r"8, 16, 2-16\); rebuild the plans to hold it: difftrt build --sizes"):
        choose_profile(profiles, unet_shapes(2, 8) | {"sample": (2, 4, 8, 20)})
    # each size is held by one of the static profiles, the pair by neither
    with pytest.raises(ShapeError, match=r"unet: no single profile of the plan holds all of \{'sample': \(2, 4, 16, 16\)"
                                         r".*; rebuild the plans to hold it: difftrt build --max-batch N \(images per "
                                         r"call\) and/or difftrt build --sizes"):
        choose_profile((s16, s32), unet_shapes(2, 16))


# -- device buffers --------------------------------------------------------------------------------------------

def test_buffer_plan_sizes(engines_dir, export_fp16_dir):
    spec = open_engine_folder(engines_dir, "sm86").specs["unet"]
    ins, outs = unet_shapes(2, 8), {"out_sample": (2, 4, 8, 8)}
    assert buffer_plan(spec, ins, outs) == [
        ("sample", (2, 4, 8, 8), "float32", 2 * 4 * 8 * 8 * 4),  # 2048
        ("timestep", (2,), "float32", 8),
        ("encoder_hidden_states", (2, 12, 32), "float32", 2 * 12 * 32 * 4),  # 3072
        ("out_sample", (2, 4, 8, 8), "float32", 2048)]
    spec16 = open_artifact(export_fp16_dir, "unet").specs["unet"]
    assert [b.nbytes for b in buffer_plan(spec16, unet_shapes(4, 16), {"out_sample": (4, 4, 16, 16)})] == [
        4 * 4 * 16 * 16 * 2, 4 * 4, 4 * 12 * 32 * 2, 8192]  # fp16 halves, the timestep stays fp32
    te = open_engine_folder(engines_dir, "sm86").specs["text_encoder"]
    assert buffer_plan(te, {"input_ids": (1, 12)}, {"last_hidden_state": (1, 12, 32)})[0].nbytes == 12 * 8  # int64
    with pytest.raises(EngineError, match=r"TensorRT resolved output out_sample to \(-1, 4, 8, 8\)"):
        buffer_plan(spec, ins, {"out_sample": (-1, 4, 8, 8)})
    with pytest.raises(EngineError, match="TensorRT gave no shape for output out_sample"):
        buffer_plan(spec, ins, {})


# -- the engine folder, opened for sampling --------------------------------------------------------------------

def test_an_engine_folder_opens_like_an_export(engines_dir, export_dir):
    artifact = open_engine_folder(engines_dir, "sm89", needs=("text_encoder", "unet", "vae_decoder"))
    export = open_artifact(export_dir)
    assert artifact.config == export.config and artifact.scheduler_config == export.scheduler_config
    assert artifact.path("unet") == engines_dir / "unet.sm89.plan" and artifact.flavour == "tensorrt_rtx"
    assert artifact.tokenizer().encode(["a red circle"]).ids.tolist() == export.tokenizer().encode(["a red circle"]).ids.tolist()
    assert artifact.specs["unet"].dim_range("batch").max == 4  # the plan's range (--max-batch 2), not the export's
    assert open_engine_folder(engines_dir / "vae_decoder.sm86.plan", "sm86").folder == engines_dir
    with pytest.raises(ArtifactError, match=r"has no unet plan for sm80; rebuild: difftrt build .* --arch sm86 --arch "
                                            r"sm89 --arch sm80 --max-batch 2"):
        open_engine_folder(engines_dir, "sm80", needs=("unet",))


def test_open_engines_refuses_an_export_for_tensorrt(export_dir):
    from difftrt.backends.registry import open_engines

    with pytest.raises(UsageError, match="is an ONNX export; build them first"):
        open_engines(open_artifact(export_dir), ("unet",), "tensorrt")


def test_check_runnable_passes_the_arch_check_and_then_needs_cupy(engines_dir, monkeypatch):
    from difftrt.trt.shim import import_tensorrt

    if not HAS_CUPY:
        with pytest.raises(DependencyError) as err:
            check_runnable(engines_dir, "sm89", import_tensorrt())
        assert str(err.value).startswith("running TensorRT plans needs CuPy for device memory and streams (No module "
                                         "named 'cupy'); pip install cupy-cuda1")
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))  # an importable CuPy: every check holds
    assert check_runnable(engines_dir, "sm89", import_tensorrt(), Verify.FULL) is Verify.FULL
    assert check_runnable(engines_dir / "unet.sm86.plan", "sm86", import_tensorrt()) is Verify.QUICK  # stamp fresh


def test_a_plan_that_does_not_deserialise_is_one_engine_error(engines_dir, tmp_path, capfd):
    from difftrt.backends.tensorrt import TrtEngine
    from difftrt.trt.gpu import local_arch

    artifact = open_engine_folder(engines_dir, "sm86")
    spec = artifact.specs["unet"]
    profiles = manifest_profiles(artifact.plan("unet"), spec)
    (tmp_path / "unet.plan").write_bytes(b"not a plan" * 100)
    cases = [(tmp_path / "unet.plan", "Serialization")]
    if local_arch() is None:  # here TensorRT-RTX reads the real plan, then finds no CUDA device to put it on
        cases.append((artifact.path("unet"), "Cuda Runtime"))  # here: cudaError 35, no CUDA driver
    for path, why in cases:
        engine = TrtEngine(path, spec, profiles, "tensorrt_rtx", rebuild=artifact.rebuild())
        with pytest.raises(EngineError) as err:
            engine.load()
        line = str(err.value)
        assert line.startswith(f"{path}: tensorrt_rtx {trt.__version__} cannot deserialise it (") and why in line
        assert line.endswith(f"if it was built by another TensorRT version or for another GPU, rebuild: "
                             f"difftrt build --export {artifact.manifest['export']['folder']} --out {engines_dir} "
                             "--arch sm86 --arch sm89 --max-batch 2") and "\n" not in line
        assert engine.stage is Stage.NEW and engine.engine is None
    assert capfd.readouterr().err == ""  # TensorRT's log goes into the message, not onto stderr


def test_allocate_names_the_rebuild_option_before_touching_the_gpu(engines_dir):
    """TrtEngine.allocate checks the spec (rank, fixed sizes), then the plan's profile, before any TensorRT call;
    the stage is forced to ACTIVE here, as activate (which needs a GPU) would leave it."""
    from difftrt.backends.tensorrt import TrtEngine

    artifact = open_engine_folder(engines_dir, "sm86")
    spec = artifact.specs["unet"]
    engine = TrtEngine(artifact.path("unet"), spec, manifest_profiles(artifact.plan("unet"), spec), "tensorrt_rtx")
    engine.stage = Stage.ACTIVE
    with pytest.raises(ShapeError, match=r"unet: input sample axis 0 \(batch 6\) is outside what the plan was built "
                                         r"for \(the plan's profile takes 1-4\); .* --max-batch N"):
        engine.allocate(unet_shapes(6, 8))
    with pytest.raises(ShapeError, match=r"unet: input sample axis 1 is 3, expected 4$"):
        engine.allocate(unet_shapes(2, 8) | {"sample": (2, 3, 8, 8)})
    assert engine.stage is Stage.ACTIVE and engine.buffers == {}


def sample_error(*args):
    result = CliRunner().invoke(main, ["sample", *args])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, lines[0]


def test_sampling_an_engine_folder_here_is_one_line(engines_dir, tmp_path):
    from difftrt.trt.gpu import local_arch

    code, line = sample_error("--engine", str(engines_dir), "--out", str(tmp_path / "o.png"))
    if local_arch() is None:  # this CPU machine
        assert code == 1 and "no CUDA GPU here: TensorRT plans run only on an NVIDIA GPU" in line
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("which", ["folder", "plan"])
def test_sampling_with_a_matching_gpu_reaches_the_runtime(engines_dir, tmp_path, monkeypatch, which):
    """Pretend the GPU is an sm86 (as no_gpu pretends there is none): the engine folder reaches the runtime, which
    needs CuPy here; with CuPy (on a GPU machine that is not an sm86) deserialising fails, also in one line."""
    import difftrt.trt.gpu

    monkeypatch.setattr(difftrt.trt.gpu, "local_arch", lambda: "sm86")
    engine = engines_dir if which == "folder" else engines_dir / "unet.sm86.plan"
    code, line = sample_error("--engine", str(engine), "--steps", "2", "--out", str(tmp_path / "o.png"))
    if not HAS_CUPY:
        assert code == 1 and "running TensorRT plans needs CuPy" in line and "pip install cupy-cuda" in line
    assert not (tmp_path / "o.png").exists()


def test_sampling_reaches_the_tensorrt_backend(engines_dir, tmp_path, monkeypatch, capfd):
    """With a matching GPU arch and an importable CuPy pretended, `difftrt sample --engine ENGINES` opens the
    engine folder and hands each plan to TrtEngine; here (no CUDA device) TensorRT cannot deserialise it."""
    import difftrt.trt.gpu

    if difftrt.trt.gpu.local_arch() is not None:
        pytest.skip("a CUDA GPU is here: the gpu tests sample for real")
    monkeypatch.setattr(difftrt.trt.gpu, "local_arch", lambda: "sm86")
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))  # never used: loading stops before it
    code, line = sample_error("--engine", str(engines_dir), "--steps", "2", "--out", str(tmp_path / "o.png"))
    assert code == 1 and line.startswith(f"error: {engines_dir / 'text_encoder.sm86.plan'}: tensorrt_rtx ")
    assert "cannot deserialise it (IRuntime::deserializeCudaEngine" in line and "Cuda Runtime" in line
    assert capfd.readouterr().err == ""


def test_onnxruntime_is_not_handed_an_engine_folder(engines_dir, export_dir, tmp_path):
    code, line = sample_error("--engine", str(engines_dir), "--backend", "onnxruntime", "--out", str(tmp_path / "o.png"))
    assert code == 2 and line == (f"error: --backend onnxruntime runs ONNX exports, and {engines_dir} holds TensorRT "
                                  f"plans; sample the export they were built from: difftrt sample --engine {export_dir}")


def test_the_runtime_modules_import_nothing_heavy():
    code = ("import sys\n"
            "import difftrt.backends.tensorrt, difftrt.backends.cuda, difftrt.trt.binding, difftrt.backends.registry\n"
            "import difftrt.runtime, difftrt.trt.engine_folder\n"
            "heavy = {'torch', 'cupy', 'tensorrt', 'tensorrt_rtx'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
