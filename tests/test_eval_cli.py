"""`difftrt eval` end to end on the tiny export (the numbers are meaningless for an untrained model; the
record's structure and the ORT-vs-torch agreement are not)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from difftrt.cli import main


def test_eval_json_grid_and_agreement(export_dir, tmp_path):
    pytest.importorskip("torch")
    args = ["eval", "--engine", str(export_dir), "--prompts", "4", "--steps", "3", "--torch",
            "--json", str(tmp_path / "e.json"), "--grid", str(tmp_path / "g.png")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "e.json").read_text())
    assert len(record["verdicts"]) == 4
    for backend in ("onnxruntime-cpu", "torch-fp32-cpu"):
        assert set(record["accuracy"][backend]) >= {"shape", "color", "position", "background"}
        assert all(0.0 <= v <= 1.0 for v in record["accuracy"][backend].values())
    assert record["agreement_ort_vs_torch"] == 1.0  # fp32 engines on the same seeds read back the same
    assert record["max_abs_pixel_diff_ort_vs_torch"] <= 2
    assert Image.open(tmp_path / "g.png").size == (4 * 16, 16)  # 4 images of 16 px, 4 to a row
    assert "accuracy" in result.output


def test_eval_rejects_zero_prompts(export_dir):
    result = CliRunner().invoke(main, ["eval", "--engine", str(export_dir), "--prompts", "0"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --prompts must be >= 1")
