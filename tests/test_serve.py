"""``difftrt serve`` as a user runs it: a real server process on 127.0.0.1, real HTTP clients."""

from __future__ import annotations

import http.client
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from difftrt.cli import main

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


class Server:
    def __init__(self, export, *options: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "difftrt", "serve", "--engine", str(export), "--port", "0",
                                      "-q", *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line + self.proc.stderr.read()
        self.port = int(match.group(1))
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # a full pipe would block the server
        for _ in range(400):
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("the server never answered /healthz")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), data

    def get(self, path: str, headers: dict | None = None):
        return self.request("GET", path, headers=headers)

    def post(self, body, headers: dict | None = None):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", "/v1/images", raw, {"Content-Type": "application/json", **(headers or {})})

    def metric(self, name: str) -> float:
        text = self.get("/metrics")[2].decode()
        found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def wait_for(self, name: str, value: float) -> None:
        for _ in range(400):
            if self.metric(name) == value:
                return
            time.sleep(0.025)
        raise AssertionError(f"{name} never reached {value}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(export_dir):
    s = Server(export_dir, "--batch-wait-ms", "400")
    yield s
    assert s.stop() == 0


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def cli_image(export_dir, tmp_path, prompt: str, seed: int, steps: int) -> np.ndarray:
    out = tmp_path / f"cli-{seed}.png"
    result = CliRunner().invoke(main, ["sample", "--engine", str(export_dir), "--prompt", prompt, "--seed", str(seed),
                                       "--steps", str(steps), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return np.asarray(Image.open(out).convert("RGB"))


def test_health_and_model_card(server):
    assert server.get("/healthz")[:1] == (200,)
    status, _, body = server.get("/v1/models")
    card = json.loads(body)["data"][0]
    assert status == 200 and card["default_size"] == 16 and card["size_multiple"] == 4 and card["max_size"] == 32
    assert set(card["components"]) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}


def test_concurrent_requests_share_steps_and_match_the_cli(export_dir, tmp_path):
    """The idle wait ends once 8 rows (4 guided requests) are queued: however the clients are scheduled, all
    four start together."""
    server = Server(export_dir, "--max-batch-rows", "8", "--batch-wait-ms", "20000")
    prompts = ["a red circle on the left", "a blue square", "a green star at the top", "a yellow triangle"]
    results: dict[int, tuple] = {}

    def client(i: int) -> None:
        results[i] = server.post({"prompt": prompts[i], "seed": 10 + i, "steps": 6})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert server.metric('difftrt_unet_rows_seen{rows="8"}') == 6  # 4 guided requests, 6 merged steps
        assert server.metric("difftrt_unet_calls_total") == 6
    finally:
        assert server.stop() == 0
    for i, (status, headers, body) in results.items():
        assert status == 200 and headers["content-type"] == "image/png"
        np.testing.assert_array_equal(pixels(body), cli_image(export_dir, tmp_path, prompts[i], 10 + i, 6))


def test_json_answer_carries_images_seed_and_timings(server):
    import base64

    status, _, body = server.post({"prompt": "a red circle", "seed": 3, "steps": 2, "num_images": 2},
                                  {"Accept": "application/json"})
    data = json.loads(body)
    assert status == 200 and data["seed"] == 3 and len(data["images"]) == 2
    assert {"queue_s", "encode_s", "denoise_s", "decode_s"} <= set(data["timings"])
    assert pixels(base64.b64decode(data["images"][0])).shape == (16, 16, 3)


@pytest.mark.parametrize("body, status, field, message", [
    (b"{not json", 400, None, "not JSON"),
    ([1, 2], 422, "body", "must be a JSON object"),
    ({}, 422, "prompt", "is required"),
    ({"prompt": "x", "steps": "ten"}, 422, "steps", "must be an integer"),
    ({"prompt": "x", "steps": 0}, 422, "steps", "must be in [1, 100]"),
    ({"prompt": "x", "guidance": float("inf")}, 422, "guidance", "finite"),
    ({"prompt": "x", "height": 18}, 422, "height", "multiple of 4"),
    ({"prompt": "x", "width": 64}, 422, "width", "must be in [4, 32]"),  # the export's validated range
    ({"prompt": "x", "num_images": 9}, 422, "num_images", "must be in [1, 4]"),
    ({"prompt": "x", "scheduler": "nope"}, 422, "scheduler", "nope"),
    ({"prompt": "x", "colour": "red"}, 422, "colour", "is not a field"),
    ({"prompt": "x" * 3000}, 422, "prompt", "the limit is 2000"),
    (b"{" + b" " * 70000 + b"}", 413, None, "over 65536 bytes"),
])
def test_bad_requests_get_4xx_json_naming_the_field(server, body, status, field, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, headers, data = server.post(raw)
    assert got == status and headers["content-type"] == "application/json"
    error = json.loads(data)["error"]
    assert error.get("field") == field and message in error["message"] and "Traceback" not in error["message"]


def test_unknown_routes_are_json_too(server):
    status, _, body = server.get("/v2/nothing")
    assert status == 404 and json.loads(body)["error"]["message"] == "Not Found"


def test_token_is_required_on_the_api(export_dir):
    s = Server(export_dir, "--token", "s3cret")
    try:
        assert s.post({"prompt": "x", "steps": 1})[0] == 401
        assert s.post({"prompt": "x", "steps": 1}, {"Authorization": "Bearer wrong"})[0] == 401
        assert s.get("/v1/models")[0] == 401
        assert s.post({"prompt": "x", "steps": 1}, {"Authorization": "Bearer s3cret"})[0] == 200
        assert s.post({"prompt": "x", "steps": 1}, {"Authorization": "bearer s3cret"})[0] == 200  # RFC 7235
        assert s.get("/healthz")[0] == 200
    finally:
        assert s.stop() == 0


def test_overload_is_503_and_a_gone_client_costs_no_step(export_dir):
    """An idle server waits --batch-wait-ms for companions: the first request sits in the queue meanwhile."""
    s = Server(export_dir, "--max-queue", "1", "--batch-wait-ms", "1500")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        conn.request("POST", "/v1/images", json.dumps({"prompt": "x", "steps": 3}).encode())
        s.wait_for("difftrt_queue_depth", 1)
        status, headers, body = s.post({"prompt": "y", "steps": 1})
        assert status == 503 and headers["retry-after"] == "1" and "overloaded" in json.loads(body)["error"]["message"]
        conn.sock.shutdown(2)  # the first client goes away while its request waits
        conn.close()
        for _ in range(100):
            if s.metric('difftrt_requests_total{status="499"}') == 1:
                break
            time.sleep(0.05)
        assert s.metric('difftrt_requests_total{status="499"}') == 1
        time.sleep(1.5)
        assert s.metric("difftrt_unet_calls_total") == 0  # dropped before its first step
    finally:
        assert s.stop() == 0


def test_sigterm_drains_in_flight_requests(export_dir):
    s = Server(export_dir, "--batch-wait-ms", "1000")
    answers = []
    client = threading.Thread(target=lambda: answers.append(s.post({"prompt": "a red circle", "steps": 20})))
    client.start()
    s.wait_for("difftrt_queue_depth", 1)  # arrived, not answered
    s.proc.send_signal(signal.SIGTERM)
    client.join(timeout=60)
    assert s.stop() == 0
    assert answers and answers[0][0] == 200 and answers[0][2][:8] == b"\x89PNG\r\n\x1a\n"


def test_two_workers_serve_and_stop_cleanly(export_dir):
    s = Server(export_dir, "--workers", "2")
    try:
        statuses = [s.post({"prompt": "a red circle", "seed": i, "steps": 2})[0] for i in range(4)]
        assert statuses == [200] * 4
    finally:
        assert s.stop() == 0
