"""benchmarks/gpu_check.py runs its whole flow on CPU at test size, so the one device call a lent GPU gets
is not its first run. Checked: every section, the record's schema, honest labels (a CPU run says so)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cpu_flow_writes_a_complete_record(tmp_path):
    gpu_check = load_script()
    assert gpu_check.main(["--device", "cpu", "--tiny", "--runs", "1", "--steps", "2", "--sd-steps", "2",
                           "--out", str(tmp_path), "--commit", "abc123"]) == 0
    [record_path] = tmp_path.glob("gpu-cpu-*.json")
    record = json.loads(record_path.read_text())
    assert record["commit"] == "abc123" and record["environment"]["gpu"] is None
    sections = record["sections"]
    assert set(sections) == {"bundled", "scheduler", "sd15", "tensorrt", "onnxruntime"}
    for name in ("bundled", "sd15"):
        rows = sections[name]["rows"]
        assert "error" not in sections[name] and len(rows) >= 3
        assert all("error" not in row for row in rows), [row.get("error") for row in rows]
        reference, *others = rows
        assert "reference" in reference["variant"] and "psnr_db_vs_reference" not in reference
        for row in others:
            assert row["finite"] and row["psnr_db_vs_reference"] > 25  # bf16 rows included
            assert row["latents_rel_err_vs_reference"] < 0.1 and row["images_per_s"] > 0
            for module in ("text_encoder", "unet_guided_call", "vae_decoder"):
                stats = row["modules"][module]
                assert stats["n"] == 1 and 0 < stats["median_ms"] and math.isfinite(stats["median_ms"])
    loop = sections["scheduler"]["rows"]
    assert {r["library"] for r in loop} == {"numpy (host)", "torch (cpu)"}
    assert max(r["max_abs_vs_numpy"] for r in loop) < 1e-4
    if importlib.util.find_spec("tensorrt_rtx"):  # CI installs it: it imports, and offers no SM90 target
        rtx = sections["tensorrt"]["tensorrt_rtx"]
        assert rtx["imports"] and "sm86" in rtx["targets"] and "sm90" not in rtx["targets"]
    markdown = record_path.with_suffix(".md").read_text()
    assert "**No GPU**" in markdown and "Every figure below is a CPU figure" in markdown
