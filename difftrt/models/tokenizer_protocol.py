"""Which tokenizer a ``tokenizer/`` folder holds. Both kinds give ``encode(prompts) -> Encoding`` (ids (B, L)
int64, what truncation dropped) and ``max_length``: the pipeline needs nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from difftrt.config import read_json
from difftrt.errors import ConfigError
from difftrt.models.tokenizer import Tokenizer


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer a ``tokenizer/`` folder holds, chosen by its ``tokenizer_config.json``: CLIP's byte-level BPE
    (``tokenizer_class`` CLIPTokenizer or CLIPTokenizerFast: Stable Diffusion folders) or difftrt's own."""
    config = read_json(Path(folder) / "tokenizer_config.json")
    kind = str(config.get("tokenizer_class", "difftrt"))
    if kind in ("CLIPTokenizer", "CLIPTokenizerFast"):
        from difftrt.models.clip_tokenizer import ClipTokenizer  # needs regex, which only CLIP folders use

        return ClipTokenizer.load(Path(folder))
    if kind != "difftrt":
        raise ConfigError(f"{folder}: tokenizer_class {kind!r} is not supported; supported: CLIPTokenizer, "
                          "CLIPTokenizerFast and difftrt's own")
    return Tokenizer.load(Path(folder))
