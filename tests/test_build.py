"""`difftrt build`: real TensorRT-RTX plans of the tiny model (built on CPU), the engine manifest, the cache,
and every check made before a plan may run."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from click.testing import CliRunner

from difftrt.cli import main
from difftrt.errors import ArtifactError, DependencyError

from .conftest import ENGINE_ARCHS

pytest.importorskip("tensorrt_rtx", reason="needs tensorrt-rtx: pip install 'difftrt[tensorrt-rtx]'")

ARCHS = ENGINE_ARCHS  # the targets of the engines_dir fixture (conftest, beside no_gpu)


def run(*args):
    return CliRunner().invoke(main, list(args))


def one_error(*args, code=None) -> str:
    result = run(*args)
    assert result.exit_code != 0 and (code is None or result.exit_code == code), result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and all(not ln.startswith("error") for ln in lines[:-1]), result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_one_plan_per_component_and_target(engines_dir):
    m = manifest(engines_dir)
    assert m["builder"]["flavour"] == "tensorrt_rtx" and m["archs"] == list(ARCHS)
    assert {(p["component"], p["arch"]) for p in m["plans"]} == {
        (c, a) for c in ("text_encoder", "unet", "vae_decoder", "vae_encoder") for a in ARCHS}
    for p in m["plans"]:
        path = engines_dir / p["file"]
        assert path.stat().st_size > 10_000 and m["files"][p["file"]]["size"] == path.stat().st_size
        assert p["flags"] == ["STRONGLY_TYPED"] and p["precision"] == "fp32"
    assert (engines_dir / "tokenizer" / "vocab.json").is_file()


def test_profiles_follow_the_export_specs_and_the_options(engines_dir, export_dir):
    export = manifest(export_dir)["components"]
    plans = {(p["component"], p["arch"]): p["profile"] for p in manifest(engines_dir)["plans"]}
    # --max-batch 2: images 1..2, the U-Net 1..4 rows (opt 2); spatial ranges are the export's own
    assert plans["unet", "sm86"] == [["batch", 1, 2, 4]] + export["unet"]["dim_ranges"][1:]
    assert plans["vae_decoder", "sm89"] == [["batch", 1, 1, 2]] + export["vae_decoder"]["dim_ranges"][1:]
    assert plans["text_encoder", "sm86"] == [["batch", 1, 1, 2]]
    assert manifest(engines_dir)["components"]["unet"]["dim_ranges"] == plans["unet", "sm86"]


def test_static_and_sizes(export_dir, tmp_path):
    out = tmp_path / "static"
    result = run("build", "--export", str(export_dir), "--out", str(out), "--arch", "sm86", "--static",
                 "--max-batch", "1", "--sizes", "32,16", "--json")
    assert result.exit_code == 0, result.output
    plans = {p["component"]: p["profile"] for p in json.loads(result.stdout)["plans"]}
    # tiny: VAE factor 2, so 32 px = 16 latent; static: min = opt = max, the U-Net 2 rows for 1 image
    assert plans["unet"] == [["batch", 2, 2, 2], ["latent_height", 16, 16, 16], ["latent_width", 16, 16, 16]]
    assert plans["vae_encoder"] == [["batch", 1, 1, 1], ["image_height", 32, 32, 32], ["image_width", 32, 32, 32]]


def test_a_second_build_reuses_every_plan_and_a_changed_option_rebuilds(export_dir, engines_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(engines_dir, out)
    again = run("build", "--export", str(export_dir), "--out", str(out), "--arch", "sm86", "--arch", "sm89",
                "--max-batch", "2")
    assert again.exit_code == 0, again.output
    assert again.stderr.count("reused the cached plan") == 8
    assert all(p["reused"] for p in manifest(out)["plans"])
    assert (out / "unet.sm86.plan").read_bytes() == (engines_dir / "unet.sm86.plan").read_bytes()
    dropping = one_error("build", "--export", str(export_dir), "--out", str(out), "--arch", "sm86", "--max-batch", "1")
    assert "also holds plans for sm89; add --arch sm89, or pass --overwrite to drop them" in dropping
    other = run("build", "--export", str(export_dir), "--out", str(out), "--arch", "sm86", "--max-batch", "1",
                "--overwrite")
    assert other.exit_code == 0, other.output
    assert "reused" not in other.stderr and not any(p["reused"] for p in manifest(out)["plans"])
    assert not (out / "unet.sm89.plan").exists()  # the folder holds exactly what was asked for


def test_a_tampered_export_is_refused_at_build(export_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(export_dir, export)
    data = bytearray((export / "unet" / "model.onnx").read_bytes())
    data[200] ^= 1
    (export / "unet" / "model.onnx").write_bytes(bytes(data))
    line = one_error("build", "--export", str(export), "--out", str(tmp_path / "e"), "--arch", "sm86")
    assert "does not match the sha256" in line and not (tmp_path / "e").exists()


@pytest.mark.parametrize("args,match", [
    (["--arch", "sm90"], "--arch sm90: tensorrt_rtx 1.7.1.116 cannot target it; it offers sm75, sm80, sm86, sm89, sm120, sm121"),
    (["--arch", "sm86", "--max-batch", "0"], "--max-batch must be >= 1, got 0"),
    (["--arch", "sm86", "--max-batch", "9"], "--max-batch 9: the export was validated for up to 8 images; export again with"),
    (["--arch", "sm86", "--sizes", "18"], "--sizes 18: unet takes multiples of 4 pixels from 4 to 32"),
    (["--arch", "sm86", "--sizes", "64"], "--sizes 64: unet takes multiples of 4 pixels from 4 to 32"),
    (["--arch", "sm86", "--sizes", "a,b"], "--sizes takes comma-separated pixel sizes"),
    ([], "no CUDA GPU here to build for: pass --arch"),
])
def test_bad_build_options(export_dir, tmp_path, no_gpu, args, match):
    line = one_error("build", "--export", str(export_dir), "--out", str(tmp_path / "e"), *args, code=2)
    assert match in line and not (tmp_path / "e").exists()


def test_an_existing_other_folder_needs_overwrite(export_dir, engines_dir, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    line = one_error("build", "--export", str(export_dir), "--out", str(tmp_path / "mine"), "--arch", "sm86")
    assert "exists and is not an engine folder" in line and (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    other_export = tmp_path / "other-export"
    shutil.copytree(export_dir, other_export)
    line = one_error("build", "--export", str(other_export), "--out", str(engines_dir), "--arch", "sm86", "--arch", "sm89")
    assert f"holds plans of another export ({export_dir}); pass --overwrite" in line


@pytest.mark.parametrize("where", [".", "unet", ".."])
def test_out_may_not_overlap_the_export(export_dir, where):
    line = one_error("build", "--export", str(export_dir), "--out", str(export_dir / where), "--arch", "sm86",
                     "--overwrite", code=2)
    assert "overlaps the export" in line
    assert (export_dir / "unet" / "model.onnx").is_file()


def test_a_failed_build_leaves_the_previous_engines(export_dir, tmp_path):
    from .test_bad_input import rehash

    export = tmp_path / "export"
    shutil.copytree(export_dir, export)
    out = tmp_path / "engines"
    assert run("build", "--export", str(export), "--out", str(out), "--arch", "sm86", "--max-batch", "1").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    (export / "unet" / "model.onnx").write_bytes(b"not an onnx graph" * 50)
    rehash(export, "unet/model.onnx")  # a consistent manifest: the failure comes from TensorRT's parser
    line = one_error("build", "--export", str(export), "--out", str(out), "--arch", "sm86", "--max-batch", "1")
    assert "TensorRT cannot parse" in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engines", "export"]  # no temp folder left


def test_fp16_plans_from_an_fp16_export(export_fp16_dir, tmp_path):
    result = run("build", "--export", str(export_fp16_dir), "--arch", "sm89", "--max-batch", "1", "--sizes", "16",
                 "--out", str(tmp_path / "e16"), "--json", "-q")
    assert result.exit_code == 0, result.output
    precisions = {p["component"]: p["precision"] for p in json.loads(result.stdout)["plans"]}
    assert precisions == {"text_encoder": "fp16", "unet": "fp16", "vae_decoder": "fp32", "vae_encoder": "fp32"}


def test_missing_export(tmp_path):
    assert "does not exist" in one_error("build", "--export", str(tmp_path / "none"), "--arch", "sm86")


def sample_line(engine, tmp_path, *extra) -> str:
    line = one_error("sample", "--engine", str(engine), "--out", str(tmp_path / "o.png"), *extra)
    assert not (tmp_path / "o.png").exists()
    return line


def test_sampling_a_plan_without_a_gpu_is_one_line(engines_dir, tmp_path, no_gpu):
    for engine, targets in ((engines_dir / "unet.sm86.plan", "sm86"), (engines_dir, "sm86, sm89")):
        assert f"no CUDA GPU here: TensorRT plans run only on an NVIDIA GPU (these are built for {targets})" in \
            sample_line(engine, tmp_path)


def test_a_plan_without_an_engine_manifest(tmp_path):
    (tmp_path / "unet.plan").write_bytes(b"plan bytes")
    assert "no engine manifest.json beside" in sample_line(tmp_path / "unet.plan", tmp_path)


def test_a_plan_from_another_tensorrt_version_is_refused_with_the_rebuild_command(engines_dir, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(engines_dir, out)
    m = manifest(out)
    m["builder"]["version"] = "1.6.0.0"
    (out / "manifest.json").write_text(json.dumps(m))
    line = sample_line(out / "unet.sm86.plan", tmp_path)
    assert "was built with tensorrt_rtx 1.6.0.0, this machine has tensorrt_rtx 1.7.1.116; rebuild: difftrt build " \
           f"--export {m['export']['folder']} --out {out} --arch sm86 --arch sm89 --max-batch 2" in line


def test_a_tampered_plan_is_refused(engines_dir, tmp_path):
    out = tmp_path / "bad"
    shutil.copytree(engines_dir, out)
    (out / "unet.sm86.plan").write_bytes(b"x" * (out / "unet.sm86.plan").stat().st_size)
    assert "does not match the sha256" in sample_line(out, tmp_path)


def test_an_export_changed_since_the_build_is_refused(export_dir, engines_dir, tmp_path):
    from difftrt.trt.engine_folder import check_runnable
    from difftrt.trt.shim import import_tensorrt

    export = tmp_path / "export"
    shutil.copytree(export_dir, export)
    out = tmp_path / "engines"
    shutil.copytree(engines_dir, out)
    m = manifest(out)
    m["export"]["folder"] = str(export)
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DependencyError, match="no CUDA GPU here"):  # unchanged export: the next check decides
        check_runnable(out, None, import_tensorrt())
    e = json.loads((export / "manifest.json").read_text())
    e["source_checkpoint"] = "somewhere else"
    (export / "manifest.json").write_text(json.dumps(e))
    with pytest.raises(ArtifactError, match="changed since these plans were built; rebuild: difftrt build"):
        check_runnable(out, None, import_tensorrt())


def test_the_gpu_checks_in_order(engines_dir):
    """On a GPU machine the same checks go on: another arch is refused with its --arch, a built one reaches the
    runtime's last need, CuPy. (The local arch is this function's input, so every path runs here.)"""
    from difftrt.trt.engine_folder import check_runnable
    from difftrt.trt.shim import import_tensorrt

    with pytest.raises(ArtifactError, match=r"holds plans for sm86, sm89, this GPU is sm80; rebuild: .* --arch sm86 "
                                            r"--arch sm89 --arch sm80 --max-batch 2$"):
        check_runnable(engines_dir, "sm80", import_tensorrt())
    with pytest.raises(ArtifactError, match="unet.sm86.plan holds plans for sm86, this GPU is sm89"):
        check_runnable(engines_dir / "unet.sm86.plan", "sm89", import_tensorrt())  # the plan named is what runs
    if importlib.util.find_spec("cupy") is None:
        with pytest.raises(DependencyError, match="running TensorRT plans needs CuPy .*; pip install cupy-cuda1"):
            check_runnable(engines_dir, "sm89", import_tensorrt())
    else:
        check_runnable(engines_dir, "sm89", import_tensorrt())  # everything holds: the runtime may open it
    with pytest.raises(DependencyError, match="running TensorRT plans needs tensorrt_rtx on a CUDA GPU machine"):
        check_runnable(engines_dir, "sm89", DependencyError("TensorRT is not installed"))
