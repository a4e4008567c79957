"""How much of each prompt's attributes survive the VAE alone: the ceiling for any U-Net on top of it.

    python benchmarks/vae_ceiling.py --ckpt difftrt/assets/shapes64 --prompts 400 \\
        --json benchmarks/results/vae-ceiling-shapes64.json

The ground-truth images of ``difftrt eval``'s prompts (same grammar, same held-apart seed) are encoded to the
posterior mean, decoded (fp32 torch, CPU) and read back by the same analyser ``difftrt eval`` uses. Printed:
the analyser on the ground truth itself (its own error), on the reconstructions, and shape accuracy split by
shape and size, since small shapes are what a 4× downsampling VAE loses first.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from difftrt.artifact import library_versions
from difftrt.bench.timing import record_header
from difftrt.data.shapes import eval_prompts, render
from difftrt.evaluate import accuracy, verdict
from difftrt.fileio import write_bytes_atomic


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", type=Path, default=Path("difftrt/assets/shapes64"), help="diffusers-layout checkpoint")
    p.add_argument("--prompts", type=int, default=400)
    p.add_argument("--prompt-seed", type=int, default=2026, help="difftrt eval's default")
    p.add_argument("--json", type=Path, help="write the record here")
    return p.parse_args(argv)


def reconstruct(vae: Any, images: np.ndarray, batch: int = 100) -> np.ndarray:
    import torch

    from difftrt.pipeline import from_uint8, to_uint8
    from difftrt.train.vae import posterior

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            mean = posterior(vae, torch.from_numpy(from_uint8(images[i:i + batch])))[0]
            out.append(to_uint8(vae.decode(mean).numpy()))
    return np.concatenate(out)


def by_shape_and_size(prompts: list, verdicts: list[dict[str, Any]]) -> dict[str, str]:
    right, total = Counter(), Counter()
    for (_, scene), v in zip(prompts, verdicts):
        key = f"{scene.objects[0].size} {scene.objects[0].shape}"
        total[key] += 1
        right[key] += v["correct"]["shape"]
    return {key: f"{right[key]}/{total[key]}" for key in sorted(total)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from difftrt.models import checkpoint

    vae = checkpoint.load(args.ckpt).vae.float().eval()
    prompts = eval_prompts(args.prompt_seed, args.prompts)
    truth = np.stack([render(scene, vae.config.sample_size) for _, scene in prompts])
    recon = reconstruct(vae, truth)
    verdicts = {name: [verdict(p, s, im) for (p, s), im in zip(prompts, images)]
                for name, images in (("ground_truth", truth), ("reconstruction", recon))}
    record = {
        **record_header(" ".join(["python", "benchmarks/vae_ceiling.py", *(argv if argv is not None else sys.argv[1:])]),
                        library_versions()),
        "checkpoint": str(args.ckpt),
        "prompts": args.prompts, "prompt_seed": args.prompt_seed,
        "accuracy": {name: accuracy(v) for name, v in verdicts.items()},
        "shape_by_size": {name: by_shape_and_size(prompts, v) for name, v in verdicts.items()},
    }
    for name, acc in record["accuracy"].items():
        print(f"{name:<15}" + "  ".join(f"{k} {v:.1%}" for k, v in acc.items()))
    print("reconstruction shape right/total:", record["shape_by_size"]["reconstruction"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(args.json, (json.dumps(record, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
