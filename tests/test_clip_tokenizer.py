"""difftrt's CLIP BPE tokenizer against transformers' CLIPTokenizer, id for id, on a vocabulary and merges
trained here (no download) in CLIP's format: 256 byte symbols, the same with </w>, the merges, the specials."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("regex")
tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from difftrt.data.shapes import eval_prompts  # noqa: E402
from difftrt.errors import ConfigError  # noqa: E402
from difftrt.models.clip_tokenizer import ClipTokenizer  # noqa: E402
from difftrt.models.tokenizer import Tokenizer  # noqa: E402
from difftrt.models.tokenizer_protocol import load_tokenizer  # noqa: E402

PROMPTS = [
    "", " ", "a", "A RED CIRCLE on the LEFT", "a red circle on the left on a white background",
    "Hello, World!!  It's 2026; naïve café — 東京タワー 🚀🚀", "DON'T   stop\tme\nnow", "IT'S THEY'LL we'Ve",
    "photo of an astronaut riding a horse on mars, 4k, trending on artstation, highly detailed!!!",
    "1girl, (masterpiece:1.2), best quality, ((blue eyes)), [red hair], 3.5mm lens f/1.8",
    "cafe\u0301 vs caf\u00e9", "non\u00a0breaking\u3000ideographic\u2003em spaces", "½ ² Ⅻ 12345 3.14 -7e-3",
    "<|endoftext|> literal <|startoftext|> specials", "x" * 60, "zzzz qqqq unseen-words: ʘ‿ʘ ∑∫√",
    "ÄÖÜ straße İstanbul ΣΟΦΟΣ", "ypogegrammeni ᾳ \u0345 alone", "tabs\t\tand\r\nnewlines", "emoji 👩‍👩‍👧 flags 🇫🇷 skin 👍🏽",
    " ".join(["word"] * 100), "a, " * 40 + "end", "ends with punctuation...?!",
]


def hf_ids(folder, prompts, max_length=77):
    hf = transformers.CLIPTokenizer.from_pretrained(str(folder))
    return np.asarray(hf(prompts, padding="max_length", max_length=max_length, truncation=True)["input_ids"])


def test_ids_equal_transformers(clip_dir):
    ours = ClipTokenizer.load(clip_dir)
    prompts = PROMPTS + [p for p, _ in eval_prompts(7, 50)]
    got, want = ours.encode(prompts).ids, hf_ids(clip_dir, prompts)
    for prompt, a, b in zip(prompts, got, want):
        assert a.tolist() == b.tolist(), prompt
    assert got.dtype == np.int64 and got.shape == (len(prompts), 77)


def test_truncation_names_what_was_dropped(clip_dir):
    ours = ClipTokenizer.load(clip_dir)
    words = [f"word{i}" for i in range(120)]
    enc = ours.encode([" ".join(words), "short"])
    assert enc.truncated == (True, False) and enc.dropped[1] == ""
    kept = transformers.CLIPTokenizer.from_pretrained(str(clip_dir)).decode(enc.ids[0], skip_special_tokens=True)
    # CLIP splits digits one by one ("word 1 1 9"), and the cut may fall inside a word: without spaces, what
    # was kept and what was dropped give back the prompt
    assert "".join(kept.split()) + "".join(enc.dropped[0].split()) == "".join(words)


def test_pad_token_from_the_folder(clip_dir, tmp_path):
    """SD 2.x pads with "!" (id 0 in its vocabulary), SD 1.x with <|endoftext|>; the folder says which."""
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((clip_dir / name).read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer", "pad_token": "!",
                                                              "model_max_length": 20}))
    ours = load_tokenizer(folder)
    assert isinstance(ours, ClipTokenizer) and ours.max_length == 20
    np.testing.assert_array_equal(ours.encode(["a red circle"]).ids, hf_ids(folder, ["a red circle"], 20))
    assert ours.encode(["a"]).ids[0, -1] == ours.vocab["!"]


def test_special_tokens_map_wins_over_the_config(clip_dir, tmp_path):
    """transformers' precedence: special_tokens_map.json overrides tokenizer_config.json (no added_tokens_decoder)."""
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((clip_dir / name).read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer",
                                                              "pad_token": "<|endoftext|>", "model_max_length": 16}))
    (folder / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": "!"}}))
    ours = ClipTokenizer.load(folder)
    assert ours.pad == ours.vocab["!"]
    np.testing.assert_array_equal(ours.encode(["a red circle"]).ids, hf_ids(folder, ["a red circle"], 16))


def test_protocol_picks_the_tokenizer(clip_dir, tmp_path):
    Tokenizer.default().save(tmp_path / "own")
    assert isinstance(load_tokenizer(tmp_path / "own"), Tokenizer)
    assert isinstance(load_tokenizer(clip_dir), ClipTokenizer)
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    with pytest.raises(ConfigError, match="tokenizer_class 'T5Tokenizer' is not supported; supported: CLIPTokenizer"):
        load_tokenizer(tmp_path / "t5")


@pytest.mark.parametrize("broken, message", [
    ("merges.txt", "has vocab.json but no merges.txt"),
    ("vocab.json", "missing config file .*vocab.json"),
    ("bad-merge", "merges.txt line 2 is not a pair of symbols"),
    ("list-vocab", "vocab.json must hold a JSON object, got list"),
    ("string-ids", "must map tokens to integer ids"),
])
def test_broken_folders_are_one_line_errors(clip_dir, tmp_path, broken, message):
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (folder / name).write_bytes((clip_dir / name).read_bytes())
    if broken in ("merges.txt", "vocab.json"):
        (folder / broken).unlink()
    elif broken == "bad-merge":
        (folder / "merges.txt").write_text("#version: 0.2\na b c\n")
    elif broken == "list-vocab":
        (folder / "vocab.json").write_text(json.dumps(["a", "b"]))
    else:
        (folder / "vocab.json").write_text(json.dumps({"a": "0"}))
    with pytest.raises(ConfigError, match=message) as info:
        ClipTokenizer.load(folder)
    assert "\n" not in str(info.value)


def test_tokenizer_json_alone_gives_the_same_ids(clip_dir, tmp_path):
    """transformers 5 saves only tokenizer.json (the BPE model inside); it is read when vocab.json is absent."""
    hf = transformers.CLIPTokenizer(str(clip_dir / "vocab.json"), str(clip_dir / "merges.txt"))
    hf.save_pretrained(str(tmp_path / "tok"))
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "tok" / name).unlink(missing_ok=True)
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    prompts = PROMPTS + [p for p, _ in eval_prompts(3, 20)]
    np.testing.assert_array_equal(ClipTokenizer.load(tmp_path / "tok").encode(prompts).ids, hf_ids(clip_dir, prompts))


def test_word_level_tokenizer_names_dropped_words_too():
    enc = Tokenizer.default(max_length=6).encode(["a red circle on the left"])
    assert enc.truncated == (True,) and enc.dropped == ("the left",)
