"""What the README's commands run: the default model's first use, and an installed wheel (not the source tree)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def difftrt_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFTRT_CACHE", "XDG_CACHE_HOME")}
    env.update(extra)
    return env


@pytest.mark.slow
def test_default_model_first_use_exports_into_the_cache_then_reads_it(tmp_path):
    pytest.importorskip("torch")
    env = difftrt_env(DIFFTRT_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "difftrt", "sample", "--steps", "4", "--json"]
    first = subprocess.run(cmd + ["--out", str(tmp_path / "a.png")], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "exporting the bundled model shapes64" in first.stderr
    exports = list((tmp_path / "cache").iterdir())
    assert len(exports) == 1 and exports[0].name.startswith("shapes64-") and exports[0].name.endswith("-v2")
    assert (exports[0] / "manifest.json").is_file()
    second = subprocess.run(cmd + ["--out", str(tmp_path / "b.png")], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "exporting" not in second.stderr
    assert json.loads(second.stdout)["verified"] == "quick"  # the stamp written at export: no file re-hashed
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.slow
def test_the_built_wheel_installs_and_samples(export_dir, tmp_path):
    """Build the wheel, install it alone into a fresh venv (its dependencies come from this environment through a
    path entry, so nothing is downloaded) and sample from a folder outside the source tree."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("difftrt-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    bundled = {p.relative_to(ROOT).as_posix() for p in (ROOT / "difftrt" / "assets").rglob("*") if p.is_file()}
    assert bundled and bundled <= names  # the default model ships as package data
    for requirement in ("numpy", "click", "pillow", "safetensors", 'onnxruntime>=1.17; extra == "cpu"',
                        'onnxruntime-gpu>=1.17; extra == "cuda"'):
        assert f"Requires-Dist: {requirement}" in metadata, requirement

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import difftrt.default_model as d; print(d.BUNDLED); print(d.bundle_id())"],
                           cwd=work, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    bundled_dir, bundle_id = where.stdout.split()
    assert bundled_dir.startswith(site)
    from difftrt import default_model

    assert bundle_id == default_model.bundle_id()  # every bundled file arrived intact
    result = subprocess.run([str(venv / "bin" / "difftrt"), "sample", "--engine", str(export_dir), "--steps", "3",
                             "--out", "o.png", "-q"], cwd=work, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (work / "o.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
