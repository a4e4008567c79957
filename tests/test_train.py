"""Training on the tiny preset: the loss falls, resume continues exactly, bad states are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from difftrt.cli import main  # noqa: E402
from difftrt.errors import TrainingError  # noqa: E402
from difftrt.train.common import TrainConfig, train_loop  # noqa: E402
from difftrt.train.presets import PRESETS  # noqa: E402
from difftrt.train.run import train_stage  # noqa: E402


def cfg(stage: str, steps: int, **kw) -> TrainConfig:
    base = dict(stage=stage, steps=steps, batch_size=8, lr=2e-3, warmup_steps=5, checkpoint_every=10,
                sample_every=10_000, log_every=1000)
    return TrainConfig(**{**base, **kw})


def mean_loss(meta, first: bool, k: int = 3) -> float:
    losses = [row[1] for row in meta["losses"]]
    return float(np.mean(losses[:k] if first else losses[-k:]))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    meta = train_stage("vae", run, "tiny", cfg("vae", 80), quiet=True)
    return run, meta


def test_vae_loss_falls_on_held_out_images(vae_run):
    """Same loss, same noise, images the run never saw: the trained VAE beats its own initialisation."""
    from difftrt.data.shapes import ShapesDataset
    from difftrt.models.vae import AutoencoderKL
    from difftrt.train.vae import load_trained_vae, narrow_posterior, to_tensor, vae_loss

    run, meta = vae_run
    assert meta["step"] == 80
    cfg_tiny = PRESETS["tiny"]
    x = to_tensor(ShapesDataset(seed=99, size=cfg_tiny.vae.sample_size).batch(0, 32)[0])
    torch.manual_seed(0)  # train_vae seeds its initialisation the same way
    fresh, trained = AutoencoderKL(cfg_tiny.vae), load_trained_vae(run, cfg_tiny)
    narrow_posterior(fresh, TrainConfig(stage="vae").logvar_init)
    with torch.no_grad():
        before = vae_loss(fresh.eval(), x, 1e-6, torch.Generator().manual_seed(1))[0].item()
        after = vae_loss(trained, x, 1e-6, torch.Generator().manual_seed(1))[0].item()
    assert after < 0.6 * before, (before, after)


def test_narrow_posterior_moves_only_the_log_variance():
    """The posterior starts at log σ² ≈ the init for any input, and μ is untouched (the other half of the bias)."""
    from difftrt.data.shapes import ShapesDataset
    from difftrt.models.vae import AutoencoderKL
    from difftrt.train.vae import narrow_posterior, posterior, to_tensor

    x = to_tensor(ShapesDataset(seed=3, size=16).batch(0, 8)[0])
    torch.manual_seed(0)
    vae = AutoencoderKL(PRESETS["tiny"].vae)
    with torch.no_grad():
        mean0, logvar0 = posterior(vae, x)
        old_bias = vae.encoder.quant_conv.bias[mean0.shape[1]:].clone()
        narrow_posterior(vae, -8.0)
        mean1, logvar1 = posterior(vae, x)
    assert torch.equal(mean0, mean1)
    assert abs(logvar0.mean().item()) < 1.0  # default init: σ ≈ 1
    assert abs(logvar1.mean().item() + 8.0) < 1.0
    assert torch.allclose(logvar1 - logvar0, (-8.0 - old_bias).view(1, -1, 1, 1).expand_as(logvar0), atol=1e-5)


@pytest.mark.slow
def test_unet_loss_falls_and_assembles_a_checkpoint(vae_run):
    run, _ = vae_run
    meta = train_stage("unet", run, "tiny", cfg("unet", 80, lr=3e-3), cache_size=64, quiet=True)
    assert mean_loss(meta, first=False) < 0.8 * mean_loss(meta, first=True)
    from difftrt.models import checkpoint

    ckpt = checkpoint.load(run / "model")  # the EMA weights in the diffusers layout, ready to export
    assert ckpt.config.vae.scaling_factor == meta["scaling_factor"] != PRESETS["tiny"].vae.scaling_factor


def test_resume_continues_exactly(tmp_path):
    straight, split = tmp_path / "a", tmp_path / "b"
    train_stage("vae", straight, "tiny", cfg("vae", 20), quiet=True)
    train_stage("vae", split, "tiny", cfg("vae", 10), quiet=True)
    meta = train_stage("vae", split, "tiny", cfg("vae", 20), resume=True, quiet=True)
    assert meta["step"] == 20
    a, b = load_file(str(straight / "vae" / "model.safetensors")), load_file(str(split / "vae" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_resume_refuses_another_config(tmp_path):
    train_stage("vae", tmp_path, "tiny", cfg("vae", 10), quiet=True)
    with pytest.raises(TrainingError, match="other settings.*lr"):
        train_stage("vae", tmp_path, "tiny", cfg("vae", 20, lr=1e-4), resume=True, quiet=True)
    with pytest.raises(TrainingError, match="another model config"):
        train_stage("vae", tmp_path, "shapes64", cfg("vae", 20), resume=True, quiet=True)
    with pytest.raises(TrainingError, match="pass --resume"):
        train_stage("vae", tmp_path, "tiny", cfg("vae", 20), quiet=True)


def test_resume_needs_a_state(tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train_stage("vae", tmp_path, "tiny", cfg("vae", 10), resume=True, quiet=True)


def test_unet_needs_a_trained_vae(tmp_path):
    with pytest.raises(TrainingError, match="train vae"):
        train_stage("unet", tmp_path, "tiny", cfg("unet", 10), cache_size=16, quiet=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    layer = torch.nn.Linear(4, 1)
    x = torch.randn(16, 4)

    def loss_fn(step):
        loss = layer(x).pow(2).mean() * (float("nan") if step == 13 else 1.0)
        return loss, {"loss": loss.item()}

    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    with pytest.raises(TrainingError, match="loss became nan at step 13.*step 10 is kept"):
        train_loop(tmp_path / "s", {"layer": layer}, optimizer, None, cfg("vae", 30), PRESETS["tiny"], loss_fn,
                   resume=False, quiet=True)
    assert json.loads((tmp_path / "s" / "trainer.json").read_text())["step"] == 10


def test_unknown_stage_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["train", "decoder", "--run", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
