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
from difftrt.models.diffusers_folder import (PipelineFolder, available_memory, check_memory, default_min_size,
                                             inspect_folder)
from difftrt.models.diffusers_modules import component_calls
from difftrt.models.specs import DEFAULT_MAX_BATCH, component_specs
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
        return default_min_size(self.config)


def load_diffusers_folder(root: Path, available: int | None = -1, progress: Callable[[str], None] = lambda _: None,
                          max_batch: int = DEFAULT_MAX_BATCH, max_size: int | None = None,
                          min_size: int | None = None) -> ImportedPipeline:
    """The folder's U-Net, VAE and CLIP text encoder in fp32 eval mode, its tokenizer and scheduler config.

    ``available``: bytes of memory to check the export's estimate against (-1: read the machine's, None: skip);
    ``max_batch``, ``max_size``, ``min_size``: the export's, checked here, before minutes of loading."""
    folder = inspect_folder(Path(root))
    component_specs(folder.config, max_batch=max_batch, max_size=max_size,
                    min_size=default_min_size(folder.config) if min_size is None else min_size)
    check_memory(folder, available_memory() if available == -1 else available, max_batch, max_size)
    apply_offline_defaults()  # local_files_only on every call forbids the hub; this covers the libraries' other paths
    try:
        import diffusers
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
    for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL), ("text_encoder", CLIPTextModel)):
        weights = folder.weights[name]
        variant = f", {weights.variant}" if weights.variant else ""
        progress(f"loading {name} ({weights.parameters / 1e6:.1f} M parameters{variant})")
        try:
            model, info = cls.from_pretrained(str(folder.root / name), local_files_only=True, use_safetensors=True,
                                              variant=weights.variant, output_loading_info=True)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise ArtifactError(f"cannot load {folder.root / name} with {cls.__name__}: {first_line(exc)}") from None
        # the libraries only warn (and we silence them) when weights do not fit: some would stay random
        for kind in ("missing_keys", "mismatched_keys"):
            if info.get(kind):
                first = info[kind][0]
                raise ArtifactError(f"{folder.root / name}: {len(info[kind])} {kind.replace('_', ' ')} against "
                                    f"{cls.__name__}'s config (first: {first}); these weights are for another "
                                    "architecture")
        loaded[name] = model.float().eval()  # fp16 variants are upcast exactly
    modules = component_calls(loaded["unet"], loaded["vae"], loaded["text_encoder"])
    return ImportedPipeline(folder.config, modules, folder.tokenizer, dict(folder.scheduler_config), folder)
