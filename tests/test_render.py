"""``difftrt sample --prompts FILE.jsonl --out-dir DIR``: batch rendering on a process pool, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from difftrt.cli import main

PROMPTS = ["a red circle on the left", "a blue square at the top", "a green star", "a yellow triangle on the right"]


def write_prompts(path, n=20, extra=()):
    lines = [json.dumps({"prompt": PROMPTS[i % 4], "steps": 4 + i % 3, **({"seed": 100 + i} if i % 5 == 0 else {})})
             for i in range(n)]
    path.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")
    return path


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def pool_render(export_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    prompts = write_prompts(root / "p.jsonl", extra=['{"prompt": "x", "height": 18}', "not json"])
    out = root / "pool"
    result = run("sample", "--engine", str(export_dir), "--prompts", str(prompts), "--out-dir", str(out),
                 "--workers", "2", "--seed", "7", "-q")
    return prompts, out, result


def test_pool_renders_every_good_line_once_and_names_the_bad_ones(pool_render):
    prompts, out, result = pool_render
    assert result.exit_code == 1
    assert f"{prompts}:21: height: must be a multiple of 4, got 18" in result.output
    assert f"{prompts}:22: not JSON" in result.output and "2 of 22 lines failed" in result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    assert sorted(r["index"] for r in ok) == list(range(20))
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["file"] for r in ok)
    assert {r["index"]: r["seed"] for r in ok}[0] == 100 and {r["index"]: r["seed"] for r in ok}[1] == 7 + 1


def test_each_png_is_the_single_sample_image_with_its_parameters(pool_render, export_dir, tmp_path):
    _, out, _ = pool_render
    for index in (0, 3):
        png = next(out.glob(f"{index:05d}-seed*.png"))
        with Image.open(png) as img:
            params = json.loads(img.text["difftrt"])
            got = np.asarray(img.convert("RGB"))
        single = tmp_path / f"{index}.png"
        assert run("sample", "--engine", str(export_dir), "--prompt", params["prompt"], "--steps", str(params["steps"]),
                   "--seed", str(params["seed"]), "--out", str(single), "-q").exit_code == 0
        np.testing.assert_array_equal(got, np.asarray(Image.open(single).convert("RGB")))


def test_a_rerun_skips_everything_finished_and_redoes_a_damaged_image(pool_render, export_dir):
    prompts, out, _ = pool_render
    victim = next(out.glob("00004-seed*.png"))
    victim.write_bytes(victim.read_bytes()[:40])  # as if the machine died mid-write (atomic writes prevent this)
    before = len((out / "results.jsonl").read_text().splitlines())
    result = run("sample", "--engine", str(export_dir), "--prompts", str(prompts), "--out-dir", str(out), "--seed", "7",
                 "--json")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {"out_dir": str(out), "lines": 22, "rendered": 1, "skipped": 19, "failed": 2}
    new = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()[before:]]
    assert [r["index"] for r in new if r["status"] == "ok"] == [4]


def test_prompts_without_out_dir_is_a_usage_error(tmp_path, export_dir):
    result = run("sample", "--engine", str(export_dir), "--prompts", str(write_prompts(tmp_path / "p.jsonl", 2)))
    assert result.exit_code == 2 and "--out-dir" in result.output
