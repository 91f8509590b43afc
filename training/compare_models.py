"""Do two catalogue models give the same masks? Per case: label Dice between them and differing pixels.

    python -m training.compare_models litemedsam-fp32 litemedsam-fp16-weights --data ../shared/data

Used to decide whether a cheaper model variant (fp16 weight storage, INT8) changes any mask.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from qmedsam.engine import Segmenter, segment_case
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import load_npz_case


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_a")
    parser.add_argument("model_b")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    engines = [Segmenter(name, threads=args.threads) for name in (args.model_a, args.model_b)]
    print(f"| case | Dice {args.model_a} vs {args.model_b} | pixels that differ |\n|---|---:|---:|")
    dices, differing = [], 0
    for path in sorted((Path(args.data) / "imgs").glob("*.npz")):
        case = load_npz_case(path)
        a, b = (segment_case(e, case.kind, case.image, case.boxes) for e in engines)
        dices.append(label_agreement(a, b))
        differing += int((a != b).sum())
        print(f"| {case.name} | {dices[-1]:.4f} | {int((a != b).sum())} |", flush=True)
    print(f"| **all** | {np.mean(dices):.4f} (min {np.min(dices):.4f}) | {differing} |")


if __name__ == "__main__":
    main()
