"""`difftrt bench`: the record's schema and its internal consistency, the statistics, the compare logic.
Timings are measured, so only their relations are checked, never their values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from difftrt.bench.compare import beyond_spread, compare, format_compare
from difftrt.bench.peak import cpu_flags, native_bf16
from difftrt.bench.timing import stats
from difftrt.cli import main
from difftrt.errors import ArtifactError

REQUIRED_ROWS = ("torch eager fp32", "torch fp32 +channels_last +sdpa", "onnxruntime fp32", "onnxruntime fp16",
                 "tensorrt")


def test_stats_are_numpy_linear_percentiles_in_ms():
    got = stats([0.005, 0.001, 0.003, 0.002, 0.004])
    # sorted 1..5 ms; linear interpolation: p10 at rank 0.4 -> 1.4, p90 at rank 3.6 -> 4.6
    assert got == {"n": 5, "median_ms": pytest.approx(3.0), "p10_ms": pytest.approx(1.4), "p90_ms": pytest.approx(4.6),
                   "min_ms": pytest.approx(1.0), "max_ms": pytest.approx(5.0)}


def test_cpu_flags_from_cpuinfo():
    info = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16\nbugs\t: none\n"
    flags = cpu_flags(info)
    assert flags["avx2"] and flags["avx512_bf16"] and not flags["amx_bf16"] and not flags["avx512_vnni"]
    assert native_bf16(flags) and not native_bf16(cpu_flags("flags : avx2 fma\n"))


def timing(median, p10, p90):
    return {"n": 5, "median_ms": median, "p10_ms": p10, "p90_ms": p90, "min_ms": p10, "max_ms": p90}


def record(cpu, rows):
    stages = ("text_encoder", "unet", "unet_call", "vae_decoder", "scheduler", "total")
    out = {"schema": "difftrt-bench", "schema_version": 2, "machine": {"cpu": cpu, "cores": 2}, "rows": [],
           "headline": {"speedup_vs_reference": {}}}
    for name, total in rows.items():
        out["rows"].append({"name": name, "ran": True, "stages": {s: total for s in stages}})
        out["headline"]["speedup_vs_reference"][name] = rows["ref"]["median_ms"] / total["median_ms"]
    return out


def test_compare_flags_only_changes_beyond_the_spread():
    assert beyond_spread(timing(10, 9, 11), timing(13, 12, 14)) and beyond_spread(timing(10, 9, 11), timing(7, 6, 8))
    assert not beyond_spread(timing(10, 9, 11), timing(10.8, 10.5, 12))  # intervals overlap
    old = record("cpu A", {"ref": timing(100, 95, 105), "fast": timing(50, 48, 52), "gone": timing(1, 1, 1)})
    new = record("cpu A", {"ref": timing(101, 96, 107), "fast": timing(60, 57, 62), "new": timing(1, 1, 1)})
    result = compare(old, new)
    by = {(c["backend"], c["stage"]): c for c in result["changes"]}
    assert by[("fast", "total")]["beyond_spread"] and by[("fast", "total")]["change"] == pytest.approx(0.2)
    assert not by[("ref", "total")]["beyond_spread"]
    assert result["only_old"] == ["gone"] and result["only_new"] == ["new"] and result["same_machine"]
    text = format_compare(result)
    assert "SLOWER" in text and "within spread" in text and "warning" not in text
    assert "warning: the records come from different machines" in format_compare(compare(old, record("cpu B", {
        "ref": timing(1, 1, 1)})))


def test_compare_refuses_other_records():
    with pytest.raises(ArtifactError, match="not a difftrt bench record of schema version 2"):
        compare({"backends": {}}, record("x", {"ref": timing(1, 1, 1)}), "old.json")


@pytest.mark.slow
def test_bench_record_is_complete_and_consistent(export_dir, export_fp16_dir, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    runs, steps = 2, 3
    args = ["bench", "--engine", str(export_dir), "--fp16-engine", str(export_fp16_dir), "--steps", str(steps),
            "--runs", str(runs), "--warmup", "1", "--threads", "1", "--sweep", "--cold-runs", "1", "--eval-prompts", "2",
            "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md"), "--plot", str(tmp_path / "b.png")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert (data["schema"], data["schema_version"]) == ("difftrt-bench", 2)
    rows = {r["name"]: r for r in data["rows"]}
    assert set(REQUIRED_ROWS) <= set(rows)
    assert not rows["tensorrt"]["ran"] and "no CUDA GPU" in rows["tensorrt"]["reason"]
    ran = [r for r in data["rows"] if r["ran"]]
    assert {"torch eager fp32", "onnxruntime fp32", "onnxruntime fp16"} <= {r["name"] for r in ran}
    flops = data["roofline"]["unet_call"]["total"]
    for r in ran:
        raw = r["raw_ms"]
        assert len(raw["total"]) == runs and len(raw["unet_call"]) == runs * steps
        assert r["stages"]["total"]["median_ms"] == pytest.approx(np.median(raw["total"]))  # stats of the raw samples
        assert r["stages"]["unet"]["median_ms"] <= r["stages"]["total"]["median_ms"]
        assert r["threads"]["intra_op"] == 1 and r["finite"]
        gflops = flops / (r["stages"]["unet_call"]["median_ms"] / 1e3) / 1e9
        assert r["roofline"]["unet_call_gflops"] == pytest.approx(gflops)
        if r["name"] != "torch eager fp32":
            assert r["fidelity"]["max_abs_latents_vs_reference"] < (0.05 if r["precision"] == "fp32" else 0.5)
            assert r["fidelity"]["psnr_db_vs_reference"] > 30
    head = data["headline"]
    assert head["reference"] == "torch eager fp32" and head["strongest_torch"].startswith("torch")
    totals = {r["name"]: r["stages"]["total"]["median_ms"] for r in ran}
    assert head["speedup_vs_reference"]["onnxruntime fp32"] == pytest.approx(
        totals["torch eager fp32"] / totals["onnxruntime fp32"])
    per_round = np.asarray(rows["torch eager fp32"]["raw_ms"]["total"]) / np.asarray(rows["onnxruntime fp32"]["raw_ms"]["total"])
    assert head["paired_vs_reference"]["onnxruntime fp32"]["median"] == pytest.approx(np.median(per_round))
    assert head["paired_vs_reference"]["torch eager fp32"]["median"] == pytest.approx(1.0)
    assert totals[head["strongest_torch"]] == min(v for k, v in totals.items() if k.startswith("torch"))
    assert {r["name"] for r in ran if r.get("prompt_fidelity")} >= {"torch eager fp32", "onnxruntime fp16"}
    cold = {c["name"]: c for c in data["cold_start"]["rows"]}
    assert cold["difftrt sample (onnxruntime)"]["ran"] and cold["difftrt sample (onnxruntime)"]["torch_imported"] is False
    assert cold["torch eager fp32"]["torch_imported"] is True and not cold["diffusers pipeline"]["ran"]
    assert all(0 < c["peak_rss_mib"] < 4096 for c in cold.values() if c["ran"])
    axes = {(p["axis"], p["value"]) for p in data["sweeps"]["points"]}
    assert {("batch", 1), ("batch", 2), ("steps", 10), ("steps", 50)} <= axes and ("size", 32) in axes  # TINY: 32 px
    assert all(math.isfinite(p["total"]["onnxruntime fp32"]["median_ms"]) for p in data["sweeps"]["points"])
    markdown = (tmp_path / "b.md").read_text()
    assert "| onnxruntime fp32 |" in markdown and "- not run: tensorrt: no CUDA GPU" in markdown
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Pipeline total" in result.output
    again = CliRunner().invoke(main, ["bench", "--compare", str(tmp_path / "b.json"), str(tmp_path / "b.json")])
    assert again.exit_code == 0 and "within spread" in again.output and "SLOWER" not in again.output


def test_bench_no_torch(export_dir):
    result = CliRunner().invoke(main, ["bench", "--engine", str(export_dir), "--steps", "2", "--runs", "1",
                                       "--warmup", "0", "--no-torch"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime fp32" in result.output and "torch eager" not in result.output


def test_bench_bad_compare_file(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"backends": {}}))
    result = CliRunner().invoke(main, ["bench", "--compare", str(tmp_path / "old.json"), str(tmp_path / "old.json")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "schema version 2" in result.output


def test_a_failing_backend_leaves_the_race_with_its_reason(export_dir):
    """A backend that raises mid-bench (here: a U-Net engine given the VAE decoder's file, refused at load) gets
    its reason; the others are still timed."""
    from difftrt.backends.ort import OrtEngine
    from difftrt.bench.e2e import bench_round_robin
    from difftrt.pipeline import SampleRequest, Text2ImagePipeline
    from difftrt.runtime import load_pipeline
    from difftrt.schedulers import from_config

    pipe, artifact = load_pipeline(export_dir)
    engines = {**pipe.engines, "unet": OrtEngine(artifact.path("vae_decoder"), artifact.specs["unet"])}
    broken = Text2ImagePipeline(engines, pipe.tokenizer, pipe.config)
    out = bench_round_robin({"good": pipe, "broken": broken}, lambda: from_config(artifact.scheduler_config),
                            SampleRequest("a red circle", steps=2), runs=2, warmup=1)
    assert out["broken"]["error"].startswith("failed: ArtifactError") and "not the unet" in out["broken"]["error"]
    assert len(out["good"]["raw_ms"]["total"]) == 2


def test_arch_bench_exports_in_a_child_and_times_each_component(tmp_path):
    """The SD-1.5 bench's whole path at test size: random diffusers folder, child export, component race."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    out = tmp_path / "arch.json"
    result = CliRunner().invoke(main, ["bench", "--arch", "sd-tiny", "--random-weights", "--cache", str(tmp_path),
                                       "--runs", "2", "--warmup", "0", "--threads", "1", "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert (tmp_path / "sd-tiny-random" / "model_index.json").is_file()
    assert record["export_run"]["peak_rss_mib"] > 100  # the child's own peak: torch alone is more
    assert record["export_memory_estimate_mib"] > record["export_run"]["peak_rss_mib"]
    labels = {"onnxruntime cpu fp32 (1 threads)", "torch fp32 eager"} | (
        {"torch bf16 autocast"} if native_bf16(cpu_flags()) else set())
    for stage, want in (("text_encoder", {"input_ids": [1, 77]}), ("vae_decoder", {"latent_sample": [1, 4, 16, 16]})):
        assert record["components"][stage]["inputs"] == want
    for stage, component in record["components"].items():
        assert set(component["rows"]) == labels, stage
        ort = component["rows"]["onnxruntime cpu fp32 (1 threads)"]
        assert ort["n"] == 2 and ort["max_abs_diff"] < 1e-3 and ort["finite"]
    assert record["components"]["unet"]["inputs"]["encoder_hidden_states"] == [2, 77, 32]


def test_arch_bench_needs_random_weights():
    result = CliRunner().invoke(main, ["bench", "--arch", "sd15"])
    assert result.exit_code == 2 and "--random-weights" in result.output
