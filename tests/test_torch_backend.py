"""The torch backend's options (the baseline users would pick) and its device-resident mode, on CPU.

Oracles: the written-out attention formula for SDPA, the fp32 eager module for every option, and the host
pipeline for the resident one. CUDA-only options are refused here with a one-line error; test_gpu.py runs
them where a GPU is present.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from difftrt.backends.torch_ref import TorchEngine, TorchOptions, torch_engines  # noqa: E402
from difftrt.errors import UsageError  # noqa: E402
from difftrt.models import checkpoint  # noqa: E402
from difftrt.models.layers import Attention  # noqa: E402
from difftrt.models.specs import component_specs  # noqa: E402
from tests.conftest import TINY, infer  # noqa: E402


@pytest.mark.parametrize("causal, context", [(False, False), (False, True), (True, False)],
                         ids=["self", "cross", "causal-self"])  # causal masks are for the text encoder's self-attention
def test_fused_attention_is_the_formula(causal, context):
    torch.manual_seed(0)
    attn = Attention(32, 4, context_dim=24 if context else None).eval()
    x = torch.randn(2, 10, 32)
    ctx = torch.randn(2, 7, 24) if context else None
    with torch.no_grad():
        written = attn(x, ctx, causal=causal)
        attn.fused = True
        fused = attn(x, ctx, causal=causal)
        # the formula itself: softmax(QKᵀ/√d + mask) V per head
        kv = x if ctx is None else ctx
        q, k, v = (t.reshape(2, -1, 4, 8).transpose(1, 2) for t in (attn.to_q(x), attn.to_k(kv), attn.to_v(kv)))
        scores = q @ k.transpose(-1, -2) / np.sqrt(8)
        if causal:
            scores = scores + torch.full((10, 10), float("-inf")).triu(1)
        formula = attn.to_out((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 10, 32))
    torch.testing.assert_close(written, formula, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused, formula, rtol=1e-5, atol=1e-6)


def unet_feeds(spec, seed: int = 0):
    """Batch 2 at the opt size, timesteps at both ends of the range (one fractional, as on a σ-grid)."""
    feeds = spec.sample_inputs(spec.profile("opt"), seed)
    feeds["timestep"] = np.array([999.0, 17.5], dtype=np.float32)
    return feeds


@pytest.fixture(scope="module")
def unet_module(ckpt_dir):
    return checkpoint.load(ckpt_dir).component_modules()["unet"]


@pytest.mark.parametrize("options, rtol", [
    (TorchOptions(channels_last=True), 1e-5),
    (TorchOptions(fused_attention=True), 1e-5),
    (TorchOptions(channels_last=True, fused_attention=True), 1e-5),
    (TorchOptions(dtype="bfloat16", autocast=True), 0.05),  # bf16 keeps 8 bits of mantissa
    (TorchOptions(dtype="bfloat16"), 0.05),
], ids=lambda o: o.label() if isinstance(o, TorchOptions) else str(o))
def test_options_match_the_fp32_reference(unet_module, options, rtol):
    spec = component_specs(TINY)["unet"]
    feeds = unet_feeds(spec)
    want = infer(TorchEngine(unet_module, spec), feeds)["out_sample"]
    got = infer(TorchEngine(unet_module, spec, options=options), feeds)["out_sample"]
    assert got.dtype == np.float32 and np.isfinite(got).all()
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= rtol * scale, options.label()
    # the reference module was not changed by building the other engine
    np.testing.assert_array_equal(infer(TorchEngine(unet_module, spec), feeds)["out_sample"], want)


@pytest.mark.parametrize("options, message", [
    (TorchOptions(cuda_graph=True), "CUDA graphs need a CUDA device"),
    (TorchOptions(autocast=True), "autocast needs a lower dtype"),
    (TorchOptions(dtype="float64"), "torch dtype must be one of"),
    (TorchOptions(compile="fastest"), "torch.compile mode must be one of"),
])
def test_impossible_options_are_one_line_errors(unet_module, options, message):
    with pytest.raises(UsageError, match=message) as info:
        TorchEngine(unet_module, component_specs(TINY)["unet"], "cpu", options)
    assert "\n" not in str(info.value)


def test_labels_name_what_runs():
    assert TorchOptions().label() == "torch fp32"
    assert TorchOptions(dtype="bfloat16", autocast=True, channels_last=True).label() == \
        "torch bf16 autocast +channels_last"
    assert TorchOptions(dtype="float16", fused_attention=True, cuda_graph=True).label() == \
        "torch fp16 +sdpa +cuda_graph"


def test_resident_pipeline_keeps_the_loop_in_torch(ckpt_dir, export_dir):
    """The whole loop on torch tensors (as on a CUDA device) gives the host loop's image."""
    from difftrt.pipeline import SampleRequest, Text2ImagePipeline
    from difftrt.runtime import load_pipeline
    from difftrt.schedulers import from_config

    host_pipe, artifact = load_pipeline(export_dir)
    ckpt = checkpoint.load(ckpt_dir)
    host = Text2ImagePipeline(torch_engines(ckpt), host_pipe.tokenizer, TINY)
    resident = Text2ImagePipeline(torch_engines(ckpt, resident=True), host_pipe.tokenizer, TINY)
    req = SampleRequest("a red circle on the left", steps=6, guidance=5.0, seed=3, num_images=2)
    seen = []
    for name in ("euler-a", "dpm++2m"):  # stochastic (host-drawn noise copied over) and multistep
        a = host(req, from_config(artifact.scheduler_config, name))
        b = resident(req, from_config(artifact.scheduler_config, name),
                     callback=lambda i, t, x, x0: seen.append((type(x), type(x0))))
        np.testing.assert_allclose(b.latents, a.latents, rtol=1e-5, atol=1e-5)
        assert np.abs(a.images.astype(int) - b.images).max() <= 1
    assert set(seen) == {(torch.Tensor, torch.Tensor)}
