"""Load a diffusers Stable Diffusion folder for export, strictly from local files (needs diffusers and
transformers, the export-time extra; sampling never does). ``inspect_folder`` has checked it first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from difftrt.config import ModelConfig
from difftrt.errors import ArtifactError, DependencyError, first_line
from difftrt.models.clip_tokenizer import ClipTokenizer
from difftrt.models.diffusers_folder import PipelineFolder, available_memory, check_memory, inspect_folder
from difftrt.models.diffusers_modules import component_calls
from difftrt.offline import apply_offline_defaults


@dataclass
class ImportedPipeline:
    """What ``export_checkpoint`` needs, as ``Checkpoint`` gives it for difftrt's own models."""

    config: ModelConfig
    modules: dict[str, nn.Module]  # component name -> wrapper taking the spec's inputs
    tokenizer: ClipTokenizer
    scheduler_config: dict[str, Any]
    folder: PipelineFolder | None = None

    def component_modules(self) -> dict[str, nn.Module]:
        return dict(self.modules)

    @property
    def default_min_size(self) -> int:
        """Half the default image side, as TensorRT's demo profiles SD 1.5 from 256 pixels: diffusers' GroupNorms
        need more than one value per group at the U-Net's deepest level, which a side of one factor can miss."""
        factor = self.config.latent_factor
        return max(factor, self.config.vae.sample_size // 2 // factor * factor)


def load_diffusers_folder(root: Path, available: int | None = -1,
                          progress: Callable[[str], None] = lambda _: None) -> ImportedPipeline:
    """The folder's U-Net, VAE and CLIP text encoder in fp32 eval mode, its tokenizer and scheduler config.

    ``available``: bytes of memory to check the export's estimate against (-1: read the machine's, None: skip)."""
    folder = inspect_folder(Path(root))
    check_memory(folder, available_memory() if available == -1 else available)
    apply_offline_defaults()  # local_files_only on every call forbids the hub; this covers the libraries' other paths
    try:
        import diffusers
        import torch
        import transformers
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel
    except ImportError as exc:
        raise DependencyError(f"importing diffusers weights needs diffusers and transformers ({exc.name} is missing): "
                              "pip install 'difftrt[export]'") from None
    for library in (diffusers, transformers):  # their notices and progress bars would interleave with ours
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()
    loaded = {}
    for name, cls, dtype_key in (("unet", UNet2DConditionModel, "torch_dtype"), ("vae", AutoencoderKL, "torch_dtype"),
                                 ("text_encoder", CLIPTextModel, "dtype")):
        weights = folder.weights[name]
        progress(f"loading {name} ({weights.parameters / 1e6:.1f} M parameters{', ' + weights.variant if weights.variant else ''})")
        try:
            loaded[name] = cls.from_pretrained(str(folder.root / name), local_files_only=True, use_safetensors=True,
                                               variant=weights.variant, **{dtype_key: torch.float32}).eval()
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise ArtifactError(f"cannot load {folder.root / name} with {cls.__name__}: {first_line(exc)}") from None
    modules = component_calls(loaded["unet"], loaded["vae"], loaded["text_encoder"])
    return ImportedPipeline(folder.config, modules, folder.tokenizer, dict(folder.scheduler_config), folder)
