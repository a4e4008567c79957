"""Every bad input gives one `error:` line on stderr, a non-zero exit, no traceback and no output file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from difftrt.cli import main
from difftrt.fileio import sha256_file


def fails(*args: str, match: str, code: int | None = None, out=None) -> str:
    result = CliRunner().invoke(main, list(args))
    assert isinstance(result.exception, SystemExit), f"unexpected exception {result.exception!r}"
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    assert match in lines[0], lines[0]
    assert "Traceback" not in result.output
    if out is not None:
        assert not out.exists()
    return lines[0]


@pytest.fixture
def copy_export(export_dir, tmp_path):
    dst = tmp_path / "export"
    shutil.copytree(export_dir, dst)
    return dst


def sample_args(engine, out, *extra):
    return ("sample", "--engine", str(engine), "--steps", "2", "--out", str(out), "-q", *extra)


def test_missing_engine(tmp_path):
    fails(*sample_args(tmp_path / "nope" / "unet.onnx", tmp_path / "o.png"), match="does not exist", out=tmp_path / "o.png")
    fails(*sample_args(tmp_path / "nope" / "unet.plan", tmp_path / "o.png"), match="does not exist", out=tmp_path / "o.png")


def test_folder_without_manifest(tmp_path):
    (tmp_path / "unet.onnx").write_bytes(b"\x08\x01")
    fails(*sample_args(tmp_path / "unet.onnx", tmp_path / "o.png"), match="manifest.json", out=tmp_path / "o.png")


def test_truncated_onnx_fails_size_check(copy_export, tmp_path):
    data = (copy_export / UNET).read_bytes()
    (copy_export / UNET).write_bytes(data[: len(data) // 2])
    fails(*sample_args(copy_export, tmp_path / "o.png"), match=f"is {len(data) // 2} bytes, manifest.json says {len(data)}",
          out=tmp_path / "o.png")


def test_same_size_change_fails_hash_check(copy_export, tmp_path):
    data = bytearray((copy_export / UNET).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy_export / UNET).write_bytes(bytes(data))
    fails(*sample_args(copy_export, tmp_path / "o.png"), match="does not match the sha256", out=tmp_path / "o.png")


UNET = "unet/model.onnx"


def rehash(folder, name):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_corrupt_onnx_with_consistent_manifest(copy_export, tmp_path):
    (copy_export / UNET).write_bytes(b"this is not protobuf" * 10)
    rehash(copy_export, UNET)
    fails(*sample_args(copy_export, tmp_path / "o.png"), match="cannot load ONNX file", out=tmp_path / "o.png")


def test_onnx_that_is_not_a_unet(copy_export, tmp_path):
    shutil.copy(copy_export / "vae_decoder/model.onnx", copy_export / UNET)
    rehash(copy_export, UNET)
    line = fails(*sample_args(copy_export, tmp_path / "o.png"), match="is not the unet its manifest describes",
                 out=tmp_path / "o.png")
    assert "['latent_sample'] in the file, ['encoder_hidden_states', 'sample', 'timestep'] in the manifest" in line


def test_engine_file_of_another_component(export_dir, tmp_path):
    fails(*sample_args(export_dir / "vae_decoder/model.onnx", tmp_path / "o.png"), match="the vae_decoder component")
    fails(*sample_args(export_dir / "vae_decoder", tmp_path / "o.png"), match="the vae_decoder component")


def test_manifest_not_json(copy_export, tmp_path):
    (copy_export / "manifest.json").write_text("{not json")
    fails(*sample_args(copy_export, tmp_path / "o.png"), match="manifest.json")


@pytest.mark.parametrize("flag,value,match", [
    ("--steps", "0", "--steps must be >= 1"),
    ("--guidance", "nan", "--guidance must be a finite number"),
    ("--guidance", "inf", "--guidance must be a finite number"),
    ("--scheduler", "warp-drive", "unsupported scheduler"),
    ("--num-images", "0", "--num-images must be >= 1"),
    ("--height", "13", "multiples of"),
    ("--eta", "-1", "--eta"),
])
def test_bad_sampling_options(export_dir, tmp_path, flag, value, match):
    out = tmp_path / "o.png"
    fails(*sample_args(export_dir, out, flag, value), match=match, out=out)


def test_latents_of_the_wrong_shape(export_dir, tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((1, 4, 5, 5), np.float32))
    out = tmp_path / "o.png"
    fails(*sample_args(export_dir, out, "--latents", str(tmp_path / "z.npy")), match="--latents has shape", out=out)


def test_latents_not_an_array(export_dir, tmp_path):
    (tmp_path / "z.npy").write_text("hello")
    out = tmp_path / "o.png"
    fails(*sample_args(export_dir, out, "--latents", str(tmp_path / "z.npy")), match="cannot read --latents", out=out)


def test_latents_pickled_object_refused(export_dir, tmp_path):
    np.save(tmp_path / "z.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    fails(*sample_args(export_dir, tmp_path / "o.png", "--latents", str(tmp_path / "z.npy")), match="cannot read --latents")


@pytest.mark.parametrize("where", ["missing_folder", "parent_is_file", "is_folder"])
def test_unwritable_output(export_dir, tmp_path, where):
    (tmp_path / "file").write_text("x")
    out = {"missing_folder": tmp_path / "nope" / "o.png", "parent_is_file": tmp_path / "file" / "o.png",
           "is_folder": tmp_path}[where]
    fails(*sample_args(export_dir, out), match="cannot write" if where != "is_folder" else "is a folder")


def test_corrupt_safetensors_in_checkpoint(ckpt_dir, tmp_path):
    bad = tmp_path / "ckpt"
    shutil.copytree(ckpt_dir, bad)
    weights = bad / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "export"
    fails("export", "--ckpt", str(bad), "--out", str(out), "-q", match="cannot read weights", out=out)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folder left behind


def test_checkpoint_missing(tmp_path):
    fails("export", "--ckpt", str(tmp_path / "none"), "--out", str(tmp_path / "e"), match="does not exist")


def test_export_refuses_to_overwrite(ckpt_dir, export_dir):
    fails("export", "--ckpt", str(ckpt_dir), "--out", str(export_dir), "-q", match="already exists")


@pytest.mark.parametrize("args,match", [
    (["sample", "--steps", "many"], "Invalid value for '--steps': 'many' is not a valid integer."),
    (["sample", "--no-such-flag"], "No such option '--no-such-flag'. (see 'difftrt sample --help')"),
    (["train", "vae"], "Missing option '--run'."),
    (["warp"], "No such command 'warp'."),
    (["sample", "--backend", "cuda-magic"], "Invalid value for '--backend'"),
])
def test_usage_errors_are_one_line(args, match):
    """click's own errors (usage, choices, missing options) follow the README's one-`error:`-line rule too."""
    fails(*args, match=match, code=2)


@pytest.mark.parametrize("strength", ["0", "-0.5", "1.5", "nan"])
def test_strength_out_of_range(export_dir, tmp_path, strength):
    out = tmp_path / "o.png"
    fails(*sample_args(export_dir, out, "--strength", strength), match="--strength must be in (0, 1]", out=out)


def test_init_image_unreadable(export_dir, tmp_path):
    (tmp_path / "in.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "o.png"
    fails(*sample_args(export_dir, out, "--init-image", str(tmp_path / "in.png")), match="cannot read image", out=out)


def test_init_image_missing(export_dir, tmp_path):
    out = tmp_path / "o.png"
    fails(*sample_args(export_dir, out, "--init-image", str(tmp_path / "none.png")), match="cannot read image", out=out)


def test_strength_too_low_for_steps(export_dir, tmp_path):
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "in.png")
    out = tmp_path / "o.png"
    fails(*sample_args(export_dir, out, "--init-image", str(tmp_path / "in.png"), "--strength", "0.1"),
          match="leaves no step to run", out=out)


def test_latents_npz_refused(export_dir, tmp_path):
    np.savez(tmp_path / "z.npz", a=np.zeros((1, 4, 8, 8), np.float32))
    out = tmp_path / "o.png"
    fails(*sample_args(export_dir, out, "--latents", str(tmp_path / "z.npz")), match="one numeric .npy array", out=out)


def test_latents_of_strings_refused(export_dir, tmp_path):
    np.save(tmp_path / "z.npy", np.full((1, 4, 8, 8), "x"))
    out = tmp_path / "o.png"
    fails(*sample_args(export_dir, out, "--latents", str(tmp_path / "z.npy")), match="one numeric .npy array", out=out)


def test_intermediates_folder_not_empty_fails_before_sampling(export_dir, tmp_path):
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "keep.txt").write_text("mine")
    out = tmp_path / "o.png"
    fails(*sample_args(export_dir, out, "--save-intermediates", str(tmp_path / "steps")), match="not an empty folder",
          out=out)
    assert (tmp_path / "steps" / "keep.txt").read_text() == "mine"


def test_atomic_dir_restores_the_previous_version_when_replacing_fails(tmp_path, monkeypatch):
    import os

    from difftrt.errors import OutputError
    from difftrt.fileio import atomic_dir

    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("previous")
    real_replace = os.replace

    def replace(src, dst):
        if str(dst) == str(target) and str(src).endswith(".tmp"):  # the new folder moving in
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match="No space left"):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert (target / "old.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
