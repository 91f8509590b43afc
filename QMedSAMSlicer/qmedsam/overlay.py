"""A PNG that shows a result at a glance: the image with its labels tinted on top (CLI only; matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write


def _display_slice(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """2D: the image itself; 3D: the slice with the largest labelled area."""
    if labels.ndim == 2:
        return image, labels, ""
    z = int(np.argmax((labels > 0).sum(axis=(1, 2))))
    return image[z], labels[z], f" (slice {z})"


def write_overlay_png(path: Path, image: np.ndarray, labels: np.ndarray, overwrite: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picture, label_slice, where = _display_slice(image, labels)
    figure, axes = plt.subplots(1, 2, figsize=(10, 5.2), dpi=100)
    for axis in axes:
        axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        axis.set_axis_off()
    tinted = np.ma.masked_where(label_slice == 0, label_slice)
    axes[1].imshow(tinted, cmap="tab20", alpha=0.55, interpolation="nearest", vmin=1, vmax=max(20, labels.max()))
    axes[0].set_title("input" + where)
    axes[1].set_title(f"QMedSAM: {len(np.unique(label_slice)) - 1} label(s){where}")
    figure.tight_layout()
    atomic_write(Path(path), lambda temp: figure.savefig(temp, format="png"), overwrite)
    plt.close(figure)
