"""CLIP's byte-level BPE tokenizer, in plain Python over a Stable Diffusion folder's ``tokenizer/`` files
(``vocab.json``, ``merges.txt``, ``tokenizer_config.json``), for sampling without transformers or torch.

The steps are those of transformers' ``CLIPTokenizer`` (the ``tokenizers`` pipeline it builds), which the
tests hold it to, id for id:
  1. special tokens written in the text (``<|startoftext|>``, ``<|endoftext|>``) are kept whole;
  2. each other stretch is normalised: Unicode NFC, every whitespace run to one space, lower case (per
     character: "ΣΟΦΟΣ" becomes "σοφοσ", as in tokenizers, not Python's "σοφος");
  3. split into contractions ('s 't 're 've 'm 'll 'd), letter runs, single digits and runs of other
     non-space characters (CLIP's pattern, with Unicode classes: ``regex``), spaces dropped;
  4. each piece's UTF-8 bytes mapped to printable characters (GPT-2's byte-to-unicode table), its last
     symbol marked end-of-word (``</w>``), and merged pairwise in the order of ``merges.txt``;
  5. ``<|startoftext|>`` ids… ``<|endoftext|>``, truncated to ``model_max_length`` (keeping both specials)
     and padded with the pad token, as diffusers' pipelines call it (``padding="max_length"``).
Unicode classes come from the ``regex`` package, whose Unicode version may be newer than the one tokenizers'
regex engine was built with: characters assigned in between can be classed differently.
"""

from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from difftrt.config import read_json
from difftrt.errors import ConfigError, DependencyError
from difftrt.models.tokenizer import Encoding

PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
END_OF_WORD = "</w>"


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable characters (control and space bytes move
    to U+0100 onwards, so no piece holds whitespace or unprintables)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = dict.fromkeys(printable), 0
    table = {b: chr(b) for b in printable}
    for b in range(256):
        if b not in chars:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _regex() -> Any:
    try:
        import regex
    except ImportError:
        raise DependencyError("the CLIP tokenizer needs the regex package (Unicode letter classes): pip install regex") from None
    return regex


def _special(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    return value.get("content", default) if isinstance(value, dict) else str(value)


def _merges_txt(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    merges = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(f"{path} line {number} is not a pair of symbols: {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def read_vocab(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges: from vocab.json + merges.txt (as Stable Diffusion folders ship them), else from
    the BPE model inside tokenizer.json (what transformers 5 saves instead)."""
    if (folder / "vocab.json").is_file() or not (folder / "tokenizer.json").is_file():
        if not (folder / "merges.txt").is_file() and (folder / "vocab.json").is_file():
            raise ConfigError(f"{folder} has vocab.json but no merges.txt (a CLIP tokenizer needs both)")
        vocab, merges = read_json(folder / "vocab.json"), _merges_txt(folder / "merges.txt")
        source = folder / "vocab.json"
    else:
        model = read_json(folder / "tokenizer.json").get("model")
        source = folder / "tokenizer.json"
        if not isinstance(model, dict) or model.get("type") != "BPE":
            raise ConfigError(f"{source} does not hold a BPE model (a CLIP tokenizer's)")
        vocab = model.get("vocab")
        try:
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        except TypeError:
            merges = [()]
        if not all(len(m) == 2 and all(isinstance(x, str) for x in m) for m in merges):
            raise ConfigError(f"{source}: the BPE merges must be pairs of symbols")
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        raise ConfigError(f"{source} must map tokens to integer ids (a CLIP vocabulary)")
    return vocab, merges  # type: ignore[return-value]


class ClipTokenizer:
    """Prompts -> (B, model_max_length) int64 ids; ``encode`` returns what ``Text2ImagePipeline`` expects."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], max_length: int = 77,
                 bos: str = "<|startoftext|>", eos: str = "<|endoftext|>", pad: str = "<|endoftext|>",
                 unk: str = "<|endoftext|>") -> None:
        for name, token in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)):
            if token not in vocab:
                raise ConfigError(f"the tokenizer's {name} token {token!r} is not in its vocab.json")
        if max_length < 2:
            raise ConfigError(f"model_max_length must be >= 2, got {max_length}")
        self.vocab, self.max_length, self.merges = vocab, max_length, list(merges)
        self.tokens = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": unk}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.bos, self.eos, self.pad, self.unk = (vocab[t] for t in (bos, eos, pad, unk))
        self.specials = {bos: self.bos, eos: self.eos}
        regex = _regex()
        self._specials_re = regex.compile("(" + "|".join(regex.escape(s) for s in self.specials) + ")")
        self._piece_re = regex.compile(PATTERN)  # the text is lower-cased already (tokenizers' Split has no flag)
        self._space_re = regex.compile(r"\s+")
        self._decode = {v: k for k, v in vocab.items()}
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def load(cls, folder: Path) -> ClipTokenizer:
        """From a diffusers/transformers ``tokenizer/`` folder; a missing or malformed file is a ``ConfigError``."""
        folder = Path(folder)
        config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        specials = read_json(folder / "special_tokens_map.json") if (folder / "special_tokens_map.json").is_file() else {}
        # as transformers: special_tokens_map.json wins, unless the config lists its added tokens itself
        config = {**config, **specials} if "added_tokens_decoder" not in config else {**specials, **config}
        vocab, merges = read_vocab(folder)
        max_length = int(config.get("model_max_length", 77))
        if max_length > 10**6:  # transformers' "no limit" sentinel; SD's CLIP is 77
            max_length = 77
        eos = _special(config, "eos_token", "<|endoftext|>")
        return cls(vocab, merges, max_length, _special(config, "bos_token", "<|startoftext|>"), eos,
                   _special(config, "pad_token", eos), _special(config, "unk_token", eos))

    def __len__(self) -> int:
        return len(self.vocab)

    def config(self) -> dict[str, Any]:
        """``tokenizer_config.json`` as ``save`` writes it (and the export manifest records)."""
        return {"tokenizer_class": "CLIPTokenizer", "model_max_length": self.max_length, **self.tokens}

    def save(self, folder: Path) -> None:
        """The CLIP files this tokenizer reads back identically: vocab.json, merges.txt (in rank order) and a
        tokenizer_config.json naming its special tokens."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False) + "\n", encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges),
                                           encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(json.dumps(self.config(), indent=2) + "\n", encoding="utf-8")

    def bpe(self, piece: str) -> list[int]:
        """One pre-tokenised piece (byte-mapped characters) -> its token ids: the adjacent pair of lowest merge
        rank is merged everywhere, left to right, until no pair is in ``merges.txt``; a symbol missing from the
        vocabulary becomes the unknown token."""
        if piece in self._cache:
            return self._cache[piece]
        word = [*piece[:-1], piece[-1] + END_OF_WORD]
        unranked = len(self.ranks)
        while len(word) > 1:
            first, second = min(zip(word, word[1:]), key=lambda pair: self.ranks.get(pair, unranked))
            if (first, second) not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = [self.vocab.get(symbol, self.unk) for symbol in word]
        self._cache[piece] = ids
        return ids

    def tokenize(self, text: str) -> list[int]:
        """The ids of ``text`` without the surrounding specials, padding or truncation."""
        table, ids = byte_to_unicode(), []
        for part in self._specials_re.split(text):
            if part in self.specials:
                ids.append(self.specials[part])
                continue
            # lower-cased character by character, as tokenizers' Lowercase does (no final-sigma rule)
            normal = "".join(c.lower() for c in self._space_re.sub(" ", unicodedata.normalize("NFC", part)))
            for piece in self._piece_re.findall(normal):
                ids += self.bpe("".join(table[b] for b in piece.encode("utf-8")))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` (end-of-word marks back to spaces), for naming what truncation dropped."""
        back, raw = {c: b for b, c in byte_to_unicode().items()}, bytearray()
        for token in (self._decode.get(i, "") for i in ids):
            if token in self.specials:
                continue
            word = token.removesuffix(END_OF_WORD)
            raw += bytes(back[c] for c in word if c in back) + (b" " if word != token else b"")
        return raw.decode("utf-8", errors="replace").strip()

    def encode(self, prompts: list[str]) -> Encoding:
        rows, truncated, dropped = [], [], []
        room = self.max_length - 2
        for prompt in prompts:
            ids = self.tokenize(prompt)
            truncated.append(len(ids) > room)
            dropped.append(self.decode(ids[room:]) if len(ids) > room else "")
            row = [self.bos, *ids[:room], self.eos]
            rows.append(row + [self.pad] * (self.max_length - len(row)))
        return Encoding(np.asarray(rows, dtype=np.int64).reshape(len(prompts), self.max_length), tuple(truncated), (),
                        tuple(dropped))
