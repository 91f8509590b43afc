"""Print the Dice of a qmedsam label image against a reference label image (any label > 0 counts)."""

import sys

import numpy as np
from qmedsam.volume_io import read_volume


def main(result_path: str, reference_path: str) -> None:
    result = read_volume(result_path).array > 0
    reference = read_volume(reference_path).array > 0
    dice = 2 * np.logical_and(result, reference).sum() / max(1, result.sum() + reference.sum())
    print(f"{result_path}: Dice against the shipped reference label = {dice:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
