"""What each open of an export verifies: sizes always, a size+mtime stamp when fresh, else every sha256."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from difftrt.artifact import STAMP, Verify, open_artifact
from difftrt.errors import ArtifactError

UNET = "unet/model.onnx"


@pytest.fixture
def export_copy(export_dir, tmp_path):
    dst = tmp_path / "export"
    shutil.copytree(export_dir, dst)  # copy2 keeps mtimes, but not the stamp's freshness: see below
    return dst


def test_an_export_opens_quick_after_it_was_written(export_dir):
    assert (export_dir / STAMP).is_file()
    assert open_artifact(export_dir).verified is Verify.QUICK
    assert open_artifact(export_dir, verify=Verify.FULL).verified is Verify.FULL


def test_a_copy_with_new_mtimes_is_hashed_once_then_quick(export_dir, tmp_path):
    dst = tmp_path / "copied"
    shutil.copytree(export_dir, dst, copy_function=shutil.copyfile)  # like `cp -r`: new mtimes
    os.unlink(dst / STAMP)
    assert open_artifact(dst).verified is Verify.FULL  # never refused: the hashes match
    assert open_artifact(dst).verified is Verify.QUICK  # the full check refreshed the stamp


def test_a_touched_file_falls_back_to_hashing(export_copy):
    os.utime(export_copy / UNET, ns=(1, 1))
    assert open_artifact(export_copy).verified is Verify.FULL


def test_a_same_size_change_is_caught(export_copy):
    data = bytearray((export_copy / UNET).read_bytes())
    data[100] ^= 1
    (export_copy / UNET).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the sha256 in manifest.json"):
        open_artifact(export_copy)


def test_what_the_quick_check_cannot_see_and_verify_can(export_copy):
    """The documented limit: same size *and* same mtime passes the quick check; --verify (FULL) catches it."""
    path = export_copy / UNET
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert open_artifact(export_copy).verified is Verify.QUICK
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        open_artifact(export_copy, verify=Verify.FULL)


def test_an_edited_manifest_invalidates_the_stamp(export_copy):
    manifest = json.loads((export_copy / "manifest.json").read_text())
    manifest["source_checkpoint"] = "elsewhere"
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    assert open_artifact(export_copy).verified is Verify.FULL


def test_a_folder_where_the_stamp_cannot_be_written_is_hashed_each_time(export_copy):
    os.unlink(export_copy / STAMP)
    (export_copy / STAMP).mkdir()  # the stamp cannot be written (as in a read-only folder, even for root)
    assert open_artifact(export_copy).verified is Verify.FULL
    assert open_artifact(export_copy).verified is Verify.FULL


def test_a_missing_file(export_copy):
    os.unlink(export_copy / "text_encoder" / "model.onnx")
    with pytest.raises(ArtifactError, match="text_encoder/model.onnx is listed in manifest.json but missing"):
        open_artifact(export_copy)


def test_an_older_export_format_says_to_export_again(export_copy):
    manifest = json.loads((export_copy / "manifest.json").read_text())
    manifest["format_version"] = 1
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"export format v1, this one reads v2\); export it again"):
        open_artifact(export_copy)


@pytest.mark.parametrize("target", ["", "unet", UNET])
def test_engine_may_name_the_folder_the_subfolder_or_the_file(export_dir, target):
    assert open_artifact(export_dir / target).folder == export_dir


@pytest.mark.parametrize("cwd,target", [("", "."), ("", "unet"), ("", UNET), ("unet", "."), ("unet", "model.onnx"),
                                        ("unet", "../unet/model.onnx")])
def test_relative_engine_paths(export_dir, monkeypatch, cwd, target):
    monkeypatch.chdir(export_dir / cwd)
    assert open_artifact(target).folder == export_dir


def test_a_folder_that_is_not_a_component(export_dir):
    with pytest.raises(ArtifactError, match="tokenizer is not a component of its export, not the unet"):
        open_artifact(export_dir / "tokenizer")


def test_a_component_file_outside_the_hash_list_is_refused(export_copy):
    manifest = json.loads((export_copy / "manifest.json").read_text())
    manifest["components"]["unet"]["file"] = "../elsewhere/model.onnx"
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="lists '../elsewhere/model.onnx', which is not a hashed file inside"):
        open_artifact(export_copy)


def test_a_needed_component_that_is_missing(export_copy):
    manifest = json.loads((export_copy / "manifest.json").read_text())
    del manifest["components"]["vae_encoder"]
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    open_artifact(export_copy)  # text-to-image does not need it
    with pytest.raises(ArtifactError, match="has no vae_encoder component"):
        open_artifact(export_copy, needs=("text_encoder", "unet", "vae_decoder", "vae_encoder"))


@pytest.mark.parametrize("broken,match", [
    (lambda m: m.update(files=[]), "manifest.json is incomplete"),
    (lambda m: m.update(components=[]), "has no unet component"),
    (lambda m: m["components"]["unet"].update(inputs=["sample"]), "the unet entry of the manifest is malformed"),
])
def test_malformed_manifests_are_one_message(export_copy, broken, match):
    manifest = json.loads((export_copy / "manifest.json").read_text())
    broken(manifest)
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=match):
        open_artifact(export_copy)
