"""A PNG that shows a result at a glance: the image with its labels tinted on top (CLI only; matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write

LABEL_ALPHA = 0.55


def label_colours(count: int) -> np.ndarray:
    """(count, 3) RGB in 0..1, one per label 1..count: matplotlib's tab10 first (neighbouring labels get
    clearly different hues), then the lighter tab20 shades, then repeating; their greys are left out, as they
    would vanish on a grey image."""
    from matplotlib import colormaps

    palette = np.concatenate([colormaps["tab10"].colors, colormaps["tab20"].colors[1::2]])
    palette = palette[np.ptp(palette, axis=1) > 0.1]
    return np.asarray([palette[i % len(palette)] for i in range(count)], float)


def _display_slice(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """2D: the image itself; 3D: the slice with the largest labelled area."""
    if labels.ndim == 2:
        return image, labels, ""
    z = int(np.argmax((labels > 0).sum(axis=(1, 2))))
    return image[z], labels[z], f" (slice {z})"


def write_overlay_png(path: Path, image: np.ndarray, labels: np.ndarray, overwrite: bool = False) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure  # Agg canvas, without touching pyplot's global backend

    picture, label_slice, where = _display_slice(image, labels)
    figure = Figure(figsize=(10, 5.2), dpi=100)
    axes = figure.subplots(1, 2)
    for axis in axes:
        axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)  # the engine's uint8
        axis.set_axis_off()
    highest = max(int(labels.max()), 1)
    tinted = np.ma.masked_where(label_slice == 0, label_slice)
    axes[1].imshow(tinted, cmap=ListedColormap(label_colours(highest)), alpha=LABEL_ALPHA,
                   interpolation="nearest", vmin=0.5, vmax=highest + 0.5)  # label v -> colour v - 1
    axes[0].set_title("input" + where)
    axes[1].set_title(f"QMedSAM: {len(np.unique(label_slice)) - 1} label(s){where}")
    figure.tight_layout()
    atomic_write(Path(path), lambda temp: figure.savefig(temp, format="png"), overwrite)
