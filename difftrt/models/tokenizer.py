"""Deterministic word-level tokenizer, saved beside the text encoder (no torch, no downloads).

Text is lower-cased and split into words, numbers and single punctuation marks; each piece maps to its
id in a fixed vocabulary (``<unk>`` when absent). Sequences are ``<bos> tokens... <eos>`` padded with
``<pad>`` to ``max_length``; longer prompts are truncated (keeping the final ``<eos>``) and reported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from difftrt.config import read_json
from difftrt.errors import ConfigError

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
_PIECE = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")

# Words of the procedural caption grammar (shapes, colours, places, sizes) plus common glue words.
DEFAULT_WORDS = (
    "a an the and on in at of with one two small large big tiny medium "
    "circle square triangle rectangle diamond star cross ring ellipse hexagon shape shapes "
    "red green blue yellow orange purple pink brown black white gray grey cyan magenta "
    "left right top bottom center centre middle corner upper lower "
    "background image picture photo of , ."
).split()


@dataclass(frozen=True)
class Encoding:
    """Token ids for a batch of prompts: ``ids`` (B, max_length) int64, plus what was lost on the way."""

    ids: np.ndarray
    truncated: tuple[bool, ...]
    unknown_words: tuple[str, ...]
    dropped: tuple[str, ...] = ()  # per prompt, the text truncation cut off ("" when nothing was)


class Tokenizer:
    """Maps prompts to fixed-length id arrays; see the module docstring for the rules."""

    def __init__(self, vocab: list[str], max_length: int) -> None:
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ConfigError(f"tokenizer vocabulary must start with {list(SPECIAL_TOKENS)}")
        if len(set(vocab)) != len(vocab):
            raise ConfigError("tokenizer vocabulary has duplicate entries")
        if max_length < 3:
            raise ConfigError(f"tokenizer max_length must be >= 3, got {max_length}")
        self.vocab = list(vocab)
        self.max_length = max_length
        self._ids = {word: i for i, word in enumerate(self.vocab)}

    @classmethod
    def default(cls, max_length: int = 16) -> "Tokenizer":
        words = list(dict.fromkeys(DEFAULT_WORDS))
        return cls(list(SPECIAL_TOKENS) + words, max_length)

    def __len__(self) -> int:
        return len(self.vocab)

    def split(self, text: str) -> list[str]:
        return _PIECE.findall(text.lower())

    def encode(self, prompts: list[str]) -> Encoding:
        rows, truncated, unknown, dropped = [], [], [], []
        for prompt in prompts:
            pieces = self.split(prompt)
            unknown += [p for p in pieces if p not in self._ids]
            ids = [self._ids.get(p, UNK) for p in pieces]
            room = self.max_length - 2
            truncated.append(len(ids) > room)
            dropped.append(" ".join(pieces[room:]))
            ids = [BOS] + ids[:room] + [EOS]
            rows.append(ids + [PAD] * (self.max_length - len(ids)))
        return Encoding(np.asarray(rows, dtype=np.int64).reshape(len(prompts), self.max_length),
                        tuple(truncated), tuple(dict.fromkeys(unknown)), tuple(dropped))

    def config(self) -> dict:
        return {"max_length": self.max_length, "lowercase": True, "pattern": _PIECE.pattern,
                "special_tokens": list(SPECIAL_TOKENS)}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, indent=0) + "\n", encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(json.dumps(self.config(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "Tokenizer":
        """difftrt's own word-level tokenizer from ``folder`` (``tokenizer_protocol.load_tokenizer`` picks the kind)."""
        config = read_json(folder / "tokenizer_config.json")
        try:
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read tokenizer vocabulary {folder / 'vocab.json'}: {exc}") from None
        if config.get("pattern", _PIECE.pattern) != _PIECE.pattern:
            raise ConfigError(f"tokenizer in {folder} uses a different split pattern; unsupported")
        if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
            raise ConfigError(f"tokenizer vocabulary {folder / 'vocab.json'} must be a JSON list of strings")
        return cls(vocab, int(config.get("max_length", 16)))

