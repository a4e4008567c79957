"""The sampling runtime never needs torch."""

from __future__ import annotations

import subprocess
import sys

BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"


def run_python(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, **kw)


def test_runtime_imports_leave_torch_out():
    code = ("import sys\n"
            "import difftrt.cli, difftrt.runtime, difftrt.pipeline, difftrt.schedulers, difftrt.backends.ort\n"
            "import difftrt.artifact, difftrt.bench.run, difftrt.trt.build, difftrt.trt.engine_folder\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_sample_runs_with_torch_unimportable(export_dir, tmp_path):
    out = tmp_path / "o.png"
    code = BLOCK_TORCH + (
        "from difftrt.cli import main\n"
        f"main(['sample', '--engine', {str(export_dir)!r}, '--steps', '3', '--out', {str(out)!r}, '-q'])\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_without_torch_is_a_clear_error(tmp_path):
    code = BLOCK_TORCH + (
        "from difftrt.cli import main\n"
        f"main(['export', '--ckpt', {str(tmp_path)!r}, '--out', {str(tmp_path / 'e')!r}])\n")
    result = run_python(code)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: this command needs torch and onnx (torch is missing): pip install 'difftrt[export]'"]


def test_stable_diffusion_export_samples_without_torch_diffusers_or_transformers(sd_tiny_export, tmp_path):
    out = tmp_path / "sd.png"
    code = BLOCK_TORCH + "".join(f"sys.modules[{m!r}] = None\n" for m in ("diffusers", "transformers", "tokenizers")) + (
        "from difftrt.cli import main\n"
        f"main(['sample', '--engine', {str(sd_tiny_export)!r}, '--steps', '3', '--out', {str(out)!r}, '-q'])\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
