"""`difftrt bench` produces a consistent record (numbers are measured, so only their relations are checked)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from difftrt.cli import main


def test_bench_json_and_markdown(export_dir, tmp_path):
    pytest.importorskip("torch")
    args = ["bench", "--engine", str(export_dir), "--steps", "3", "--runs", "2", "--warmup", "1",
            "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())
    ort, ref = data["backends"]["onnxruntime-cpu"]["stages"], data["backends"]["torch-eager-cpu"]["stages"]
    for stages in (ort, ref):
        assert stages["unet_call"]["n"] == 2 * 3  # runs x steps
        assert stages["unet"]["median_ms"] <= stages["total"]["median_ms"]
        assert stages["unet_call"]["p10_ms"] <= stages["unet_call"]["median_ms"] <= stages["unet_call"]["p90_ms"]
    assert data["ratio"]["stages"]["total"] == pytest.approx(ref["total"]["median_ms"] / ort["total"]["median_ms"])
    assert data["fidelity"]["max_abs_latent_diff_ort_vs_torch"] < 1e-2
    assert "| Pipeline total |" in (tmp_path / "b.md").read_text()
    assert "Pipeline total" in result.output


def test_bench_no_torch(export_dir):
    result = CliRunner().invoke(main, ["bench", "--engine", str(export_dir), "--steps", "2", "--runs", "1",
                                       "--warmup", "0", "--no-torch"])
    assert result.exit_code == 0, result.output
    assert "torch" not in result.output.splitlines()[0]
