"""Load and fault benchmark for ``difftrt serve`` and Dask batch rendering, bounded and loopback-only.

    python benchmarks/load.py --out benchmarks/results/DATE-load-cpu [--engine DIR] [--seconds 15]

1. Concurrent clients (1, 4, 8) for a fixed time against one server, with step-level batching and without
   (``--max-batch-rows 2``: one guided request per step): p50/p95/p99 latency, images/s, the rows of every
   merged U-Net call (from /metrics).
2. A server with ``--workers 2`` under 4 clients; one worker process is killed mid-load: what failed (and how
   the clients saw it), and whether the server kept answering.
3. A Dask LocalCluster(2) rendering 40 items; one worker is killed after the 5th result: every item must end
   up rendered exactly once.
Writes OUT.json (every latency) and OUT.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


class Server:
    def __init__(self, engine: str, *options: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "difftrt", "serve", "--engine", engine, "--port", "0",
                                      "-q", *options], stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        self.port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep the pipe drained
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the server did not come up")

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body).encode())
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def rows_seen(self) -> dict[int, int]:
        text = self.call("GET", "/metrics")[1].decode()
        return {int(r): int(float(n)) for r, n in re.findall(r'difftrt_unet_rows_seen\{rows="(\d+)"\} (\S+)', text)}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def clients(server: Server, n: int, seconds: float, steps: int) -> dict:
    """n clients posting back to back for ``seconds``; every outcome recorded."""
    latencies, outcomes, lock = [], {}, threading.Lock()
    stop_at = time.perf_counter() + seconds
    before = server.rows_seen()

    def client(k: int) -> None:
        seed = 1000 * k
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                status, _ = server.call("POST", "/v1/images", {"prompt": "a red circle on the left", "seed": seed,
                                                              "steps": steps})
                key = str(status)
            except OSError as exc:
                key = f"client error: {type(exc).__name__}"
            with lock:
                outcomes[key] = outcomes.get(key, 0) + 1
                if key == "200":
                    latencies.append(time.perf_counter() - start)
            seed += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = server.rows_seen()
    rows = {r: after.get(r, 0) - before.get(r, 0) for r in after if after.get(r, 0) - before.get(r, 0)}
    ms = np.asarray(latencies) * 1e3
    return {"clients": n, "seconds": round(wall, 2), "outcomes": outcomes, "images_per_s": round(len(ms) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "unet_rows_per_call": dict(sorted(rows.items())), "latencies_ms": [round(v, 2) for v in ms]}


def worker_pids(parent: int) -> list[int]:
    """The server's live worker processes (spawned by multiprocessing; not its resource tracker, not zombies)."""
    try:
        children = [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
    except OSError:
        return []
    workers = []
    for pid in children:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
        except OSError:
            continue
        if b"spawn_main" in cmdline and state != "Z":
            workers.append(pid)
    return workers


def server_fault(engine: str, seconds: float, steps: int) -> dict:
    server = Server(engine, "--workers", "2", "--max-queue", "64")
    before = worker_pids(server.proc.pid)
    result: dict = {}

    def kill_later() -> None:
        time.sleep(seconds / 3)
        victims = worker_pids(server.proc.pid)
        if victims:
            os.kill(victims[0], signal.SIGKILL)
            result["killed_pid"] = victims[0]

    killer = threading.Thread(target=kill_later)
    killer.start()
    load = clients(server, 4, seconds, steps)
    killer.join()
    time.sleep(2)
    result.update({"workers_before": before, "workers_after": worker_pids(server.proc.pid), "load": load,
                   "answers_after_kill": [server.call("GET", "/healthz")[0] for _ in range(4)],
                   "exit_status": server.stop()})
    return result


def dask_fault(engine: str, out: Path, items_n: int = 40) -> dict:
    import dask
    from distributed import LocalCluster

    from difftrt.render import check, read_items
    from difftrt.render_run import render_items
    from difftrt.runtime import load_pipeline

    factor = load_pipeline(Path(engine))[0].config.latent_factor
    prompts = out / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": "a blue square", "steps": 15}) + "\n" for _ in range(items_n)))
    items, _ = read_items(prompts, {"seed": 0}, lambda p: check(p, factor))
    (out / "renders").mkdir(exist_ok=True)
    start = time.perf_counter()
    with dask.config.set({"distributed.scheduler.worker-ttl": "30s"}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", protocol="tcp://",
                         dashboard_address="127.0.0.1:0") as cluster:
        victim = next(iter(cluster.workers.values())).process.pid
        records, killed_at, stats = [], None, {}
        for record in render_items(items, Path(engine), out / "renders", factor, address=cluster.scheduler_address,
                                   chunk=2, stats=stats):
            records.append(record)
            if len(records) == 5:
                os.kill(victim, signal.SIGKILL)
                killed_at = round(time.perf_counter() - start, 2)
    counts = np.bincount([r["index"] for r in records], minlength=items_n)
    return {"items": items_n, "records": len(records), "ok": sum(r["status"] == "ok" for r in records),
            "rendered_exactly_once": int((counts == 1).sum()), "lost": int((counts == 0).sum()),
            "duplicated": int((counts > 1).sum()), "results_arrived_twice": stats.get("duplicates", 0), "pngs": len(list((out / "renders").glob("*.png"))),
            "killed_after_s": killed_at, "seconds": round(time.perf_counter() - start, 2)}


def markdown(record: dict) -> str:
    lines = [f"# `{record['command']}`", "", f"{record['date_utc']} · {record['machine']} · engine {record['engine']}, "
             f"{record['steps']} steps, default size, guidance 5", ""]
    lines += ["| batching | clients | images/s | p50 ms | p95 ms | p99 ms | outcomes | U-Net rows per call: calls |",
              "|---|---|---|---|---|---|---|---|"]
    for label, runs in record["load"].items():
        for r in runs:
            lines.append(f"| {label} | {r['clients']} | {r['images_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
                         f"{r['p99_ms']} | {r['outcomes']} | {r['unet_rows_per_call']} |")
    f = record["server_fault"]
    lines += ["", "The clients run in this process on the same 2 cores as the server: their overhead takes CPU from "
              "the server too, so compare batching with the best unbatched figure, not only the same client count."]
    lines += ["", f"**Server worker killed mid-load** (2 workers, 4 clients, pid {f.get('killed_pid')} killed with "
              f"SIGKILL a third of the way in): outcomes {f['load']['outcomes']}; "
              f"workers before {f['workers_before']}, after {f['workers_after']}; /healthz after: "
              f"{f['answers_after_kill']}; exit status after SIGTERM {f['exit_status']}."]
    d = record["dask_fault"]
    lines += ["", f"**Dask worker killed mid-job** (LocalCluster(2), {d['items']} items, killed after the 5th result, "
              f"{d['killed_after_s']} s in): {d['ok']} ok, {d['rendered_exactly_once']} rendered exactly once, "
              f"{d['lost']} lost, {d['duplicated']} written twice, {d['pngs']} PNGs, {d['seconds']} s in all; results "
              f"that arrived twice (a task re-run after its result was sent) and were dropped: "
              f"{d['results_arrived_twice']}. The client-side de-duplication makes 'written twice' 0 by construction; "
              "'lost' is the measured figure."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default=None, help="export folder (default: the bundled model's export)")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    args = parser.parse_args()
    from difftrt import default_model
    from difftrt.artifact import library_versions
    from difftrt.bench.timing import record_header

    engine = args.engine or str(default_model.ensure_exported())
    record = {**record_header(" ".join(["python", *sys.argv]), library_versions()), "engine": engine,
              "steps": args.steps, "load": {}}
    record["machine"] = f"{record['machine']['cpu']}, {record['machine']['cores']} cores, no GPU"
    for label, options in (("step-level", ()), ("off (--max-batch-rows 2)", ("--max-batch-rows", "2"))):
        server = Server(engine, "--max-queue", "64", *options)
        record["load"][label] = [clients(server, int(n), args.seconds, args.steps) for n in args.clients.split(",")]
        server.stop()
    record["server_fault"] = server_fault(engine, args.seconds, args.steps)
    scratch = args.out.parent / (args.out.name + "-scratch")
    scratch.mkdir(parents=True, exist_ok=True)
    record["dask_fault"] = dask_fault(engine, scratch)
    import shutil

    shutil.rmtree(scratch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
