"""Copy a trained run's assembled checkpoint into the package as fp16 safetensors (the bundled default model).

    python tools/ship_model.py runs/shapes64/model difftrt/assets/shapes64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difftrt.models import checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="checkpoint folder (diffusers layout), e.g. runs/NAME/model")
    parser.add_argument("dest", type=Path, help="where to write the fp16 copy")
    args = parser.parse_args()
    checkpoint.save(checkpoint.load(args.source), args.dest, overwrite=True, dtype=torch.float16)
    total = sum(p.stat().st_size for p in args.dest.rglob("*") if p.is_file())
    print(f"wrote {args.dest} ({total / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
