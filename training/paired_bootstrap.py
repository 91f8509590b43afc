"""Is one quantized model more faithful to FP32 than another, or is the difference noise of 16 cases?

    python -m training.paired_bootstrap --segs runs/dfq/models/segs \\
        w6a6-synthetic-reparam:w6a6-noise-reparam w8a8-real-reparam:w8a8-synthetic-reparam

For each pair A:B, every case's agreement with the reference masks (label-wise Dice against FP32's
segmentation) is computed for both models from the masks dfq_table keeps, and the per-case differences
A − B are resampled with replacement (a paired bootstrap over cases) for a 95 % interval of the mean
difference. Pairing removes what the cases have in common (a hard case is hard for both models), which is
why it resolves differences that the two means alone cannot.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import npz_files_in, read_npz_arrays

from training.provenance import REPO_ROOT

REFERENCE = "litemedsam-fp32"


def per_case_agreement(reference: Path, segs: Path) -> dict[str, float]:
    """Label-wise Dice between each case's masks in segs and in reference, by file name."""
    agreement = {}
    for path in npz_files_in(reference):
        if not (segs / path.name).exists():
            raise SystemExit(f"{segs} has no masks for {path.name}; score that model again with training.dfq_table")
        ours, theirs = (read_npz_arrays(p, ["segs"], role="Masks", needs="masks hold 'segs'")["segs"]
                        for p in (path, segs / path.name))
        agreement[path.name] = label_agreement(ours, theirs)
    return agreement


@dataclass(frozen=True)
class PairedDifference:
    mean: float
    low: float  # 2.5th percentile of the bootstrap means
    high: float  # 97.5th percentile
    wins: int  # cases where A agrees with the reference better than B
    cases: int

    def __str__(self) -> str:
        return (f"{self.mean:+.3f} [95 % CI {self.low:+.3f}, {self.high:+.3f}], "
                f"better on {self.wins}/{self.cases} cases")


def paired_difference(a: dict[str, float], b: dict[str, float], resamples: int = 10_000,
                      seed: int = 0) -> PairedDifference:
    if a.keys() != b.keys():
        raise ValueError("the two models were scored on different cases")
    differences = np.array([a[case] - b[case] for case in sorted(a)])
    picks = np.random.default_rng(seed).integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedDifference(float(differences.mean()), float(low), float(high),
                            int((differences > 0).sum()), len(differences))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", metavar="A:B", help="two model names of the --segs folder")
    parser.add_argument("--segs", type=Path, default=REPO_ROOT / "runs" / "dfq" / "models" / "segs")
    parser.add_argument("--reference", default=REFERENCE)
    args = parser.parse_args(argv)

    cache: dict[str, dict[str, float]] = {}
    for pair in args.pairs:
        names = pair.split(":")
        if len(names) != 2:
            raise SystemExit(f"{pair!r}: give a pair as A:B, two model names of {args.segs}")
        for name in names:
            if name not in cache:  # a missing folder is reported by per_case_agreement, case by case
                cache[name] = per_case_agreement(args.segs / args.reference, args.segs / name)
        print(f"{names[0]} − {names[1]}: {paired_difference(cache[names[0]], cache[names[1]])}")


if __name__ == "__main__":
    main()
