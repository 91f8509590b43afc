"""Print the Dice of a qmedsam label image against a reference label image (any label > 0 counts)."""

import sys

import numpy as np
import SimpleITK as sitk


def main(result_path: str, reference_path: str) -> None:
    result = sitk.GetArrayFromImage(sitk.ReadImage(result_path)) > 0
    reference = sitk.GetArrayFromImage(sitk.ReadImage(reference_path)) > 0
    dice = 2 * np.logical_and(result, reference).sum() / max(1, result.sum() + reference.sum())
    print(f"{result_path}: Dice against the shipped reference label = {dice:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
