"""Do two catalogue models give the same masks? Per case: label Dice between them and differing pixels.

    python -m training.compare_models litemedsam-fp32 litemedsam-fp16-weights --data ../shared/data
    python -m training.compare_models litemedsam-fp32 litemedsam-fp32@bf16    # f32 vs bf16 arithmetic
    python -m training.compare_models runs/dfq/models:w8a8-real runs/dfq/models:w8a8-real-log2-only

Used to decide whether a cheaper model variant (fp16 weight storage, INT8) changes any mask, and what it
gains: each case's wall time for both models, measured interleaved in the same run (first run of each
model includes nothing cached: every case is a new image).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from qmedsam.engine import Segmenter, segment_case
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import load_npz_case

from training.data import DEFAULT_DATA
from training.quant_table import segmenter_for


def _segmenter(spec: str, threads: int) -> Segmenter:
    """A quant_table model spec ('name' or 'folder:name'), optionally with '@bf16' (run with bf16 arithmetic)."""
    model, _, precision = spec.partition("@")
    return segmenter_for(model, threads, precision or "f32")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_a")
    parser.add_argument("model_b")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    engines = [_segmenter(spec, args.threads) for spec in (args.model_a, args.model_b)]
    print(f"| case | Dice {args.model_a} vs {args.model_b} | pixels that differ | s {args.model_a} | "
          f"s {args.model_b} |\n|---|---:|---:|---:|---:|")
    dices, differing, seconds = [], 0, np.zeros(2)
    for path in sorted((Path(args.data) / "imgs").glob("*.npz")):
        case = load_npz_case(path)
        results, took = [], []
        for engine in engines:  # interleaved, so machine drift affects both models alike
            started = time.perf_counter()
            results.append(segment_case(engine, case.kind, case.image, case.boxes))
            took.append(time.perf_counter() - started)
        a, b = results
        seconds += took
        dices.append(label_agreement(a, b))
        differing += int((a != b).sum())
        print(f"| {case.name} | {dices[-1]:.4f} | {int((a != b).sum())} | {took[0]:.2f} | {took[1]:.2f} |",
              flush=True)
    print(f"| **all** | {np.mean(dices):.4f} (min {np.min(dices):.4f}) | {differing} | {seconds[0]:.1f} | "
          f"{seconds[1]:.1f} |")


if __name__ == "__main__":
    main()
