"""Stable Diffusion weights as diffusers saves them, checked before anything is loaded.

    SD/model_index.json             {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", ...], ...}
    SD/unet/config.json             SD/unet/diffusion_pytorch_model[.fp16].safetensors (or shards + an index)
    SD/vae/config.json              SD/vae/diffusion_pytorch_model[.fp16].safetensors
    SD/text_encoder/config.json     SD/text_encoder/model[.fp16].safetensors
    SD/tokenizer/                   tokenizer_config.json, vocab.json + merges.txt or tokenizer.json (CLIP's BPE)
    SD/scheduler/scheduler_config.json

Everything here reads JSON and the safetensors headers only: no torch, nothing unpickled, nothing downloaded.
It finds the layout, the pipeline class, one set of safetensors files per component (pickle-only weights are
refused, with the conversion to run), the difftrt ``ModelConfig`` that the configs imply, and an estimate of
the memory an export will need.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difftrt.config import ModelConfig, TextEncoderConfig, UNetConfig, VAEConfig, read_json
from difftrt.errors import ArtifactError, ConfigError, ResourceError
from difftrt.models.clip_tokenizer import ClipTokenizer

SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
CLASSES = {"unet": ("UNet2DConditionModel",), "vae": ("AutoencoderKL",),
           "text_encoder": ("CLIPTextModel",),
           "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast")}
WEIGHT_STEMS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
# U-Net features this pipeline does not drive (SDXL's added conditioning, LCM's guidance embedding, ...)
UNSUPPORTED_UNET_KEYS = ("addition_embed_type", "class_embed_type", "time_cond_proj_dim", "encoder_hid_dim")
CONVERT_HINT = ("convert it once with diffusers, in an environment you trust: "
                "StableDiffusionPipeline.from_pretrained(DIR).save_pretrained(NEW_DIR, safe_serialization=True)")
# Export peak memory: every component's fp32 weights stay loaded as the torch reference; exporting the largest one
# adds the traced graph's initialisers, the ONNX file being written and the ONNX Runtime session that validates it.
# Measured on SD-1.5 (benchmarks/results/2026-12-02-bench-sd15-random-cpu.md): the export child's VmHWM was
# 11,295 MiB, i.e. 4,067 MiB of weights + 1,024 (overhead) + 1,024 (attention scores, added apart) + 1.6 x the
# U-Net's 3,278 MiB; with 2.5 copies the estimate (14,312 MiB) is 27 % above the measured peak.
EXPORT_COPIES = 2.5
OVERHEAD_BYTES = 1 << 30  # interpreter, torch, onnxruntime and validation activations


@dataclass(frozen=True)
class Weights:
    """One component's safetensors files (several when sharded), and what their headers say."""

    files: tuple[Path, ...]
    variant: str | None  # diffusers' weight variant ("fp16" for diffusion_pytorch_model.fp16.safetensors)
    parameters: int  # floating-point elements

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.parameters


@dataclass(frozen=True)
class PipelineFolder:
    root: Path
    configs: dict[str, dict[str, Any]]  # "unet", "vae", "text_encoder": the components' config.json
    scheduler_config: dict[str, Any]
    tokenizer: ClipTokenizer
    weights: dict[str, Weights]
    config: ModelConfig

    def export_memory(self, max_batch: int = 1, max_size: int | None = None) -> int:
        """Bytes an export is expected to need at its peak: the weights (see ``EXPORT_COPIES``) and the largest
        validation call's attention scores (``attention_bytes``)."""
        sizes = [w.fp32_bytes for w in self.weights.values()]
        weights = sum(sizes) + EXPORT_COPIES * max(sizes) + OVERHEAD_BYTES
        return int(weights + self.attention_bytes(max_batch, max_size))

    def attention_bytes(self, max_batch: int, max_size: int | None) -> int:
        """The U-Net's first self-attention at the largest validated call: 2·max_batch rows × heads × (h·w)²
        fp32 scores. ONNX Runtime's CPU attention holds that whole matrix (torch's SDPA does not)."""
        unet = self.configs["unet"]
        if not any("CrossAttn" in str(b) for b in unet.get("down_block_types", ("CrossAttnDownBlock2D",))):
            return 0
        heads = _first(unet.get("num_attention_heads") or unet.get("attention_head_dim") or 8)
        side = (max_size or 2 * self.config.vae.sample_size) // self.config.vae.downsample_factor
        return 2 * max_batch * heads * (side * side) ** 2 * 4


def is_difftrt_checkpoint(path: Path) -> bool:
    """A folder written by difftrt's own trainer (its model_index names difftrt's pipeline)."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text(encoding="utf-8")).get("_class_name") == "DifftrtText2ImagePipeline"
    except (OSError, ValueError, AttributeError):
        return False


def safetensors_parameters(path: Path) -> int:
    """Floating-point elements in a safetensors file, from its JSON header (8-byte length, then the header)."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100 << 20:
                raise ValueError(f"header length {length}")
            header = json.loads(f.read(length))
        total = 0
        for name, entry in header.items():
            if name != "__metadata__" and entry["dtype"] in FLOAT_DTYPES:
                count = 1
                for d in entry["shape"]:
                    count *= int(d)
                total += count
        return total
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def find_weights(folder: Path, stem: str) -> Weights:
    """The component's safetensors weights: ``stem.safetensors`` first, else one variant (``stem.fp16.safetensors``),
    each possibly sharded (``stem[.variant].safetensors.index.json``). Pickle-only weights are refused unread."""
    candidates: list[tuple[str | None, bool, list[Path]]] = []  # (variant, sharded, files)
    for index in sorted(folder.glob(f"{stem}.safetensors.index*.json")):
        rest = index.name[len(f"{stem}.safetensors.index"):-len(".json")]
        if rest and not rest.startswith("."):
            continue
        try:
            shards = sorted({folder / str(v) for v in read_json(index)["weight_map"].values()})
        except (KeyError, AttributeError, TypeError) as exc:
            raise ArtifactError(f"{index} has no weight_map ({exc})") from None
        candidates.append((rest.lstrip(".") or None, True, shards))
    for file in sorted(folder.glob(f"{stem}*.safetensors")):
        rest = file.name[len(stem):-len(".safetensors")]
        if rest and not rest.startswith("."):  # another file (..._ema.safetensors, a shard -00001-of-00002)
            continue
        candidates.append((rest.lstrip(".") or None, False, [file]))
    if not candidates:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
        if pickles:
            raise ArtifactError(f"{folder} has weights only in pickle format ({', '.join(pickles)}); difftrt never "
                                f"unpickles files (they can run code). {CONVERT_HINT}")
        raise ArtifactError(f"{folder} has no {stem}.safetensors (nor a variant such as {stem}.fp16.safetensors)")
    variants = sorted({c[0] for c in candidates}, key=lambda v: (v is not None, v or ""))
    if variants[0] is not None and len(variants) > 1:
        raise ArtifactError(f"{folder} has weights of several variants ({', '.join(map(str, variants))}) and none "
                            "without one; keep the variant to export")
    # as diffusers and transformers load them: the plain variant first, a single file before a shard index
    variant, _, files = min((c for c in candidates if c[0] == variants[0]), key=lambda c: c[1])
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ArtifactError(f"weights file {missing[0]} is listed by the shard index but missing")
    return Weights(tuple(files), variant, sum(safetensors_parameters(f) for f in files))


def _first(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _int_field(config: dict[str, Any], key: str, default: int, where: Path) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where / 'config.json'}: {key} must be an integer, got {value!r}")
    return value


def default_min_size(config: ModelConfig) -> int:
    """Half the default image side, as TensorRT's demo profiles SD 1.5 from 256 pixels; a side of one factor
    can leave diffusers' GroupNorms one value per group at the U-Net's deepest level (the tiny test model's)."""
    factor = config.latent_factor
    return max(factor, config.vae.sample_size // 2 // factor * factor)


def model_config(unet: dict[str, Any], vae: dict[str, Any], text: dict[str, Any], max_length: int) -> ModelConfig:
    """The difftrt ``ModelConfig`` whose specs describe the tensors of these diffusers/transformers configs
    (defaults: those of diffusers' and transformers' classes). Only the tensor-facing fields matter: the modules
    themselves are diffusers'."""
    try:
        vae_blocks = tuple(vae.get("block_out_channels", (64,)))
        vae_factor = 2 ** (len(vae_blocks) - 1)  # diffusers' vae_scale_factor; never assumed to be 8
        sample_size = _first(unet.get("sample_size") or 64)
        groups = int(unet.get("norm_num_groups") or 32)
        return ModelConfig(
            unet=UNetConfig(in_channels=int(unet.get("in_channels", 4)), out_channels=int(unet.get("out_channels", 4)),
                            block_channels=tuple(unet.get("block_out_channels", (320, 640, 1280, 1280))),
                            cross_attention_dim=_first(unet.get("cross_attention_dim", 1280)), norm_groups=groups,
                            sample_size=sample_size, attention_levels=()),
            vae=VAEConfig(in_channels=int(vae.get("in_channels", 3)), latent_channels=int(vae.get("latent_channels", 4)),
                          block_channels=vae_blocks, norm_groups=int(vae.get("norm_num_groups", 32)),
                          scaling_factor=float(vae.get("scaling_factor", 0.18215)),
                          sample_size=sample_size * vae_factor),  # the pipeline's default: unet size × VAE factor
            text_encoder=TextEncoderConfig(vocab_size=int(text.get("vocab_size", 49408)), max_length=int(max_length),
                                           hidden_size=int(text.get("hidden_size", 512)),
                                           num_layers=int(text.get("num_hidden_layers", 12)),
                                           num_heads=int(text.get("num_attention_heads", 8))),
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"the U-Net, VAE and text encoder configs do not fit together: {exc}") from None


def _class_of(index: dict[str, Any], root: Path, name: str) -> None:
    entry = index.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and entry[1]):
        raise ArtifactError(f"{root / 'model_index.json'} lists no {name} component")
    if entry[1] not in CLASSES[name]:
        raise ConfigError(f"{name} is a {entry[1]}; supported: {', '.join(CLASSES[name])}")
    if not (root / name).is_dir():
        raise ArtifactError(f"{root} has no {name}/ folder, which model_index.json lists")


def inspect_folder(root: Path) -> PipelineFolder:
    """Check a diffusers pipeline folder and read what an export needs from it; every problem is one
    ``ArtifactError``/``ConfigError`` naming the file."""
    root = Path(root)
    if root.is_file():
        hint = (f" {CONVERT_HINT}" if root.suffix in PICKLE_SUFFIXES else
                " Save it as a diffusers folder: StableDiffusionPipeline.from_single_file(FILE).save_pretrained(DIR)")
        raise ArtifactError(f"{root} is a single file; difftrt reads diffusers pipeline folders.{hint}")
    if not root.is_dir():
        raise ArtifactError(f"checkpoint folder {root} does not exist")
    if not (root / "model_index.json").is_file():
        raise ArtifactError(f"{root} is not a diffusers pipeline folder (no model_index.json); expected unet/, vae/, "
                            "text_encoder/, tokenizer/ and scheduler/ beside one")
    index = read_json(root / "model_index.json")
    kind = str(index.get("_class_name"))
    if kind not in SUPPORTED_PIPELINES:
        raise ConfigError(f"{root} holds a {kind}; supported: {', '.join(SUPPORTED_PIPELINES)} (Stable Diffusion 1.x/2.x)")
    for name in CLASSES:
        _class_of(index, root, name)
    configs = {name: read_json(root / name / "config.json") for name in WEIGHT_STEMS}
    present = [k for k in UNSUPPORTED_UNET_KEYS if configs["unet"].get(k) is not None]
    if present:
        raise ConfigError(f"{root / 'unet' / 'config.json'} sets {', '.join(present)}: a U-Net for another pipeline "
                          f"(SDXL, LCM, unCLIP...); supported: {', '.join(SUPPORTED_PIPELINES)}")
    if configs["unet"].get("in_channels", 4) != configs["vae"].get("latent_channels", 4):
        raise ConfigError(f"the U-Net takes {configs['unet'].get('in_channels')} channels but the VAE's latents have "
                          f"{configs['vae'].get('latent_channels', 4)} (an inpainting U-Net?); not supported")
    read_json(root / "tokenizer" / "tokenizer_config.json")  # its absence is an error here, not a default
    tokenizer = ClipTokenizer.load(root / "tokenizer")
    max_length = tokenizer.max_length
    vocab_size = _int_field(configs["text_encoder"], "vocab_size", 49408, root / "text_encoder")
    if len(tokenizer) > vocab_size:
        raise ConfigError(f"{root / 'tokenizer'} has {len(tokenizer)} tokens but the text encoder's vocab_size is "
                          f"{vocab_size}")
    positions = _int_field(configs["text_encoder"], "max_position_embeddings", 77, root / "text_encoder")
    if max_length > positions:
        raise ConfigError(f"the tokenizer's model_max_length {max_length} exceeds the text encoder's "
                          f"max_position_embeddings {positions}")
    scheduler = read_json(root / "scheduler" / "scheduler_config.json")
    weights = {name: find_weights(root / name, stem) for name, stem in WEIGHT_STEMS.items()}
    config = model_config(configs["unet"], configs["vae"], configs["text_encoder"], max_length)
    return PipelineFolder(root, configs, scheduler, tokenizer, weights, config)


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (Linux), else None: the check is then skipped."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(folder: PipelineFolder, available: int | None, max_batch: int = 1, max_size: int | None = None) -> None:
    """Fail before loading anything when the export's estimated peak exceeds the memory available."""
    need = folder.export_memory(max_batch, max_size)
    if available is not None and need > available:
        gib = 2**30
        sizes = ", ".join(f"{n} {w.fp32_bytes / gib:.1f}" for n, w in folder.weights.items())
        attention = folder.attention_bytes(max_batch, max_size)
        raise ResourceError(f"exporting {folder.root} needs about {need / gib:.1f} GiB of memory (fp32 weights in GiB: "
                            f"{sizes}, the largest held about {1 + EXPORT_COPIES:g} times; attention scores at the "
                            f"largest validated call {attention / gib:.1f}), but {available / gib:.1f} GiB is "
                            "available; narrow --max-batch/--max-size, or export on a larger machine")
