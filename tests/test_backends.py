"""Backend selection: the engine file's kind decides, --backend overrides, a missing backend is one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from difftrt.backends.ort import check_one_flavour
from difftrt.backends.registry import backend_for
from difftrt.cli import main
from difftrt.errors import ArtifactError, DependencyError


def one_error_line(args) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_file_kind_chooses_the_backend(export_dir, tmp_path):
    assert backend_for(export_dir) == "onnxruntime"
    assert backend_for(export_dir / "unet" / "model.onnx") == "onnxruntime"
    (tmp_path / "unet.plan").write_bytes(b"plan")
    assert backend_for(tmp_path / "unet.plan") == "tensorrt"
    assert backend_for(export_dir, "tensorrt") == "tensorrt"
    (tmp_path / "unet.bin").write_bytes(b"?")
    with pytest.raises(ArtifactError, match="unknown engine file kind '.bin'"):
        backend_for(tmp_path / "unet.bin")


def test_a_plan_goes_to_the_tensorrt_checks(tmp_path):
    (tmp_path / "unet.plan").write_bytes(b"not a real plan")
    line = one_error_line(["sample", "--engine", str(tmp_path / "unet.plan"), "--out", str(tmp_path / "o.png")])
    assert "no engine manifest.json beside" in line and "difftrt build --export" in line
    assert not (tmp_path / "o.png").exists()


def test_backend_override(export_dir, tmp_path):
    result = CliRunner().invoke(main, ["sample", "--engine", str(export_dir), "--backend", "tensorrt",
                                       "--out", str(tmp_path / "o.png")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: --backend tensorrt runs plans, and {export_dir} is an ONNX export; "
                                     f"build them first: difftrt build --export {export_dir} --out engines/tiny")
    ok = CliRunner().invoke(main, ["sample", "--engine", str(export_dir), "--backend", "onnxruntime", "--steps", "2",
                                   "--out", str(tmp_path / "o.png"), "-q", "--json"])
    assert ok.exit_code == 0 and '"backend": "onnxruntime"' in ok.stdout


def test_missing_onnxruntime_names_the_extra(export_dir, tmp_path):
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from difftrt.cli import main\n"
            f"main(['sample', '--engine', {str(export_dir)!r}, '--out', {str(tmp_path / 'o.png')!r}])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'difftrt[cpu]' (or 'difftrt[cuda]'" in lines[0], result.stderr


def test_both_onnxruntime_flavours_are_refused():
    with pytest.raises(DependencyError, match="both onnxruntime and onnxruntime-gpu are installed"):
        check_one_flavour(lambda dist: dist in {"onnxruntime", "onnxruntime-gpu"})
    check_one_flavour(lambda dist: dist == "onnxruntime")
    check_one_flavour(lambda dist: dist == "onnxruntime-gpu")
