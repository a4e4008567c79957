"""Stable Diffusion folders for the tests, with nothing downloaded: a CLIP-format BPE vocabulary trained here
(tokenizers' BPE trainer with CLIP's pre-tokenisation, the vocabulary laid out as CLIP's is: 256 byte symbols,
the same with </w>, the merges, the specials), and tiny random-weight pipelines saved by diffusers itself."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS_EXTRA = ["Hello, World! It's 2026; naïve café — 東京タワー 🚀 don't won't they'll I'm we've you're he'd",
                "photo of an astronaut riding a horse on mars, 4k, trending on artstation, highly detailed!!!",
                "1girl, (masterpiece:1.2), best quality, ((blue eyes)), [red hair], 3.5mm lens f/1.8"]


def save_vocab(folder: Path, vocab: dict, merges: list, max_length: int = 77) -> None:
    """A CLIP-format tokenizer/ folder, as Stable Diffusion ships it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer",
                                                              "model_max_length": max_length}), encoding="utf-8")


def train_clip_tokenizer(folder: Path, scratch: Path) -> Path:
    from tokenizers import Regex, Tokenizer as HfTokenizer, models, normalizers, pre_tokenizers, trainers

    from difftrt.data.shapes import eval_prompts
    from difftrt.models.clip_tokenizer import PATTERN, byte_to_unicode

    tok = HfTokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix="</w>",
                                  show_progress=False)
    tok.train_from_iterator([p for p, _ in eval_prompts(1, 400)] + CORPUS_EXTRA * 5, trainer)
    tok.model.save(str(scratch))
    merges = [tuple(line.split()) for line in (scratch / "merges.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#")]
    base = list(byte_to_unicode().values())
    words = dict.fromkeys(base + [c + "</w>" for c in base] + ["".join(m) for m in merges]
                          + ["<|startoftext|>", "<|endoftext|>"])
    save_vocab(folder, {w: i for i, w in enumerate(words)}, merges)
    assert len(merges) > 100
    return folder
