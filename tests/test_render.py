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


def local_cluster(n_workers=2):
    """Loopback only, no dashboard; a lowered worker-ttl as the README recommends."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.worker-ttl": "30s"}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            protocol="tcp://", dashboard_address="127.0.0.1:0")


def test_dask_renders_the_same_images_and_resumes(pool_render, export_dir, tmp_path):
    pytest.importorskip("distributed")
    prompts, pool_out, _ = pool_render
    with local_cluster() as cluster:
        args = ("sample", "--engine", str(export_dir), "--prompts", str(prompts), "--out-dir", str(tmp_path / "d"),
                "--seed", "7", "--scheduler-address", cluster.scheduler_address, "-q")
        assert run(*args).exit_code == 1  # the two bad lines
        again = run(*args[:-1], "--json")
        assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 20
    for png in pool_out.glob("*.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "d" / png.name)), np.asarray(Image.open(png)))


def test_a_killed_dask_worker_loses_nothing(export_dir, tmp_path):
    """One worker is killed mid-job: its tasks run again elsewhere, every item is written exactly once."""
    pytest.importorskip("distributed")
    import os
    import signal

    from difftrt.render import check, read_items
    from difftrt.render_run import render_items

    prompts = write_prompts(tmp_path / "p.jsonl", n=24)
    items, bad = read_items(prompts, {"seed": 0}, lambda p: check(p, 4))
    items = [type(i)(i.index, i.line, {**i.params, "steps": 30}) for i in items]  # long enough to kill mid-job
    out = tmp_path / "out"
    out.mkdir()
    with local_cluster() as cluster:
        victim = next(iter(cluster.workers.values())).process.pid
        records = []
        for record in render_items(items, export_dir, out, 4, address=cluster.scheduler_address, chunk=2):
            records.append(record)
            if len(records) == 2:
                os.kill(victim, signal.SIGKILL)
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)  # it was killed
    assert bad == [] and sorted(r["index"] for r in records) == list(range(24))
    assert all(r["status"] == "ok" for r in records)
    assert len(list(out.glob("*.png"))) == 24
