"""Draws the extension and effect icons (a box around a segmented blob); run once, the PNGs are committed.

    python Resources/make_icons.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def icon(size: int, background: bool) -> Image.Image:
    y, x = np.mgrid[:size, :size] / (size - 1)
    rgba = np.zeros((size, size, 4), np.uint8)
    if background:
        rgba[...] = (32, 48, 72, 255)
        grey = (40 + 60 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.1)).astype(np.uint8)
        rgba[..., 0] = rgba[..., 1] = rgba[..., 2] = grey
    blob = ((x - 0.5) / 0.26) ** 2 + ((y - 0.55) / 0.2) ** 2 + 0.15 * np.sin(9 * x) <= 1
    rgba[blob] = (240, 120, 40, 255)
    line = max(1, size // 16)
    low, high = int(0.16 * size), int(0.84 * size)
    for band in (slice(low, low + line), slice(high - line, high)):
        rgba[band, low:high] = (255, 216, 0, 255)
        rgba[low:high, band] = (255, 216, 0, 255)
    return Image.fromarray(rgba, "RGBA")


if __name__ == "__main__":
    icon(128, True).save(ROOT / "Resources" / "QMedSAMSlicer.png")
    icon(128, True).save(ROOT / "QMedSAMSlicer" / "Resources" / "Icons" / "QMedSAMSlicer.png")
    icon(21, False).save(ROOT / "QMedSAMSlicer" / "Resources" / "Icons" / "QMedSAMEffect.png")
