"""What both training stages share: the run config, EMA, atomic training state, progress lines."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from difftrt.config import ModelConfig, model_config_to_dict
from difftrt.errors import TrainingError
from difftrt.fileio import atomic_dir

# Fields that may change between a run and its resumption; any other difference is refused.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "sample_every", "max_minutes", "log_every")


@dataclass(frozen=True)
class TrainConfig:
    stage: str  # "vae" or "unet"
    steps: int = 2000  # optimizer steps to reach (a resumed run continues up to this)
    batch_size: int = 32  # images per step
    lr: float = 1e-3  # AdamW learning rate (after a linear warm-up)
    warmup_steps: int = 200  # linear learning-rate warm-up
    weight_decay: float = 0.01  # AdamW weight decay
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: off); a VAE run at lr 1e-3 diverged without
    ema_decay: float = 0.999  # U-Net/text-encoder EMA (the shipped weights)
    cond_drop: float = 0.1  # probability a caption is replaced by "" so classifier-free guidance works
    kl_weight: float = 1e-6  # VAE: weight of KL(q(z|x) || N(0, I)) against the reconstruction MSE
    logvar_init: float = -8.0  # VAE: initial log σ² of q(z|x); at 0 (σ = 1) the noise drowns the latent and blurs
    seed: int = 0  # noise, timesteps and dropout
    data_seed: int = 0  # the procedural dataset (sample i of step s is index s·batch_size + i)
    checkpoint_every: int = 250  # steps between atomic checkpoints
    sample_every: int = 500  # steps between sample grids
    log_every: int = 50  # steps between progress lines when not on a terminal
    max_minutes: float | None = None  # checkpoint and stop after this much wall time

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lr_at(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))


class EMA:
    """Exponential moving average of parameters: θ̄ ← d·θ̄ + (1 − d)·θ."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.clone() for k, v in flat_state(modules).items()}  # keys "module.param", as saved

    @torch.no_grad()
    def update(self, modules: dict[str, torch.nn.Module]) -> None:
        for n, m in modules.items():
            for k, v in m.state_dict().items():
                s = self.shadow[f"{n}.{k}"]
                if v.dtype.is_floating_point:
                    s.mul_(self.decay).add_(v, alpha=1 - self.decay)
                else:
                    s.copy_(v)

    def state_for(self, name: str) -> dict[str, torch.Tensor]:
        prefix = f"{name}."
        return {k[len(prefix):]: v for k, v in self.shadow.items() if k.startswith(prefix)}


def flat_state(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.detach().contiguous() for n, m in modules.items() for k, v in m.state_dict().items()}


def load_flat_state(modules: dict[str, torch.nn.Module], state: dict[str, torch.Tensor]) -> None:
    for n, m in modules.items():
        prefix = f"{n}."
        m.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def save_state(folder: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
               ema: EMA | None, meta: dict[str, Any]) -> None:
    """Weights, EMA, optimizer and metadata, written together atomically (the old state stays until then)."""
    with atomic_dir(folder, overwrite=True) as tmp:
        save_file(flat_state(modules), str(tmp / "model.safetensors"))
        if ema is not None:
            save_file({k: v.contiguous() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "trainer.json").write_text(json.dumps(meta, indent=1) + "\n")


def load_state(folder: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
               ema: EMA | None) -> dict[str, Any]:
    meta = json.loads((folder / "trainer.json").read_text())
    load_flat_state(modules, load_file(str(folder / "model.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    if ema is not None:
        ema.shadow = load_file(str(folder / "ema.safetensors"))
    return meta


def check_resume(meta: dict[str, Any], cfg: TrainConfig, model: ModelConfig) -> None:
    """Refuse to resume a state written for another model or training configuration."""
    if meta["model_config"] != json.loads(json.dumps(model_config_to_dict(model))):
        raise TrainingError("the resume checkpoint was trained with another model config; use a new --run folder")
    old = {k: v for k, v in meta["train_config"].items() if k not in RESUMABLE_CHANGES}
    new = {k: v for k, v in cfg.to_json().items() if k not in RESUMABLE_CHANGES}
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise TrainingError(f"the resume checkpoint was trained with other settings ({', '.join(diff)}); "
                            "keep them, or start a new --run folder")


def check_finite(loss: torch.Tensor, step: int, last_saved: int) -> None:
    if not math.isfinite(loss.item()):
        raise TrainingError(f"loss became {loss.item()} at step {step}; stopped, the checkpoint of step {last_saved} "
                            "is kept. Lower --lr or resume from it")


class Progress:
    """Step, smoothed loss, speed and ETA: rewritten in place on a terminal, every ``log_every`` steps otherwise."""

    def __init__(self, stage: str, start: int, total: int, log_every: int, quiet: bool) -> None:
        self.stage, self.start, self.total, self.log_every, self.quiet = stage, start, total, log_every, quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.smooth: float | None = None

    def update(self, step: int, loss: float) -> None:
        self.smooth = loss if self.smooth is None else 0.98 * self.smooth + 0.02 * loss
        if self.quiet or not (self.tty or (step + 1) % self.log_every == 0 or step + 1 == self.total):
            return
        done = step + 1 - self.start
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - step - 1) / max(rate, 1e-9)
        line = (f"{self.stage} step {step + 1}/{self.total}  loss {self.smooth:.4f}  {rate:.2f} it/s  "
                f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr)


def step_generator(seed: int, step: int) -> torch.Generator:
    """Randomness of one step, a function of (seed, step) only, so a resumed run draws what it would have."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def train_loop(state_dir: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
               ema: EMA | None, cfg: TrainConfig, model_cfg: ModelConfig, loss_fn, *, resume: bool, quiet: bool,
               extra_meta: dict[str, Any] | None = None, on_checkpoint=None, on_sample=None) -> dict[str, Any]:
    """The shared loop: resume, step, check the loss, EMA, checkpoint atomically, sample, stop on time.

    ``loss_fn(step) -> (loss tensor, {name: float})``; ``on_checkpoint(step)`` and ``on_sample(step)`` run
    after a checkpoint is saved and every ``sample_every`` steps. Returns the metadata last saved.
    """
    meta: dict[str, Any] = {"stage": cfg.stage, "step": 0, "train_config": cfg.to_json(),
                            "model_config": model_config_to_dict(model_cfg), "losses": [], "wall_seconds": 0.0,
                            **(extra_meta or {})}
    if (state_dir / "trainer.json").is_file():
        if not resume:
            raise TrainingError(f"{state_dir} already holds a {cfg.stage} run; pass --resume to continue it")
        check_resume(json.loads((state_dir / "trainer.json").read_text()), cfg, model_cfg)
        saved = load_state(state_dir, modules, optimizer, ema)
        meta.update({k: saved[k] for k in ("step", "losses", "wall_seconds")})
    elif resume:
        raise TrainingError(f"nothing to resume: {state_dir} has no trainer.json")
    start, last_saved = meta["step"], meta["step"]
    progress = Progress(cfg.stage, start, cfg.steps, cfg.log_every, quiet)
    t0, wall0 = time.perf_counter(), meta["wall_seconds"]
    for module in modules.values():
        module.train()
    for step in range(start, cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        loss, logs = loss_fn(step)
        check_finite(loss, step, last_saved)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(modules)
        progress.update(step, logs["loss"])
        if step % 10 == 0:
            meta["losses"].append([step, *(round(v, 6) for v in logs.values())])
            meta["loss_columns"] = ["step", *logs]
        out_of_time = cfg.max_minutes is not None and time.perf_counter() - t0 > 60 * cfg.max_minutes
        done = step + 1 == cfg.steps
        if (step + 1) % cfg.checkpoint_every == 0 or done or out_of_time:
            meta.update(step=step + 1, wall_seconds=wall0 + time.perf_counter() - t0)
            save_state(state_dir, modules, optimizer, ema, meta)
            last_saved = step + 1
            if on_checkpoint is not None:
                on_checkpoint(step + 1)
        if on_sample is not None and ((step + 1) % cfg.sample_every == 0 or done):
            on_sample(step + 1)
        if out_of_time:
            break
    progress.close()
    for module in modules.values():
        module.eval()
    return meta
