"""Draws Resources/Screenshots/QMedSAMResult.png, the Extensions Index screenshot; run once, the PNG is committed.

    python Resources/make_screenshot.py            # needs ../shared/data beside the repo

It shows what the effect computes, honestly labelled: the real engine (the shipped default model, the same
calls the Segment Editor effect makes) on a real CT case, drawn with matplotlib. It is not a capture of the
Slicer window, which cannot run where this was made.
"""

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from qmedsam.engine import Segmenter, segment_case  # noqa: E402
from qmedsam.npz_io import load_npz_case  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CASE = REPO.parent / "shared" / "data" / "imgs" / "3DBox_CT_totalseg-examplect.npz"
OUT = REPO / "Resources" / "Screenshots" / "QMedSAMResult.png"


def main():
    case = load_npz_case(CASE)
    segmenter = Segmenter(None, threads=2)
    labels = segment_case(segmenter, case.kind, case.image, case.boxes)
    z = int(np.argmax((labels > 0).sum(axis=(1, 2))))  # the axial slice with most segmented voxels
    y = int(np.argmax((labels > 0).sum(axis=(0, 2))))  # the coronal row with most
    colours = ListedColormap(plt.cm.tab10(np.arange(10)))

    figure, (axial, coronal) = plt.subplots(1, 2, figsize=(10, 5.4), dpi=110,
                                             gridspec_kw={"width_ratios": [case.image.shape[2], case.image.shape[2]]})
    for axes, image, mask, title in ((axial, case.image[z], labels[z], f"axial slice {z}"),
                                     (coronal, case.image[:, y, :], labels[:, y, :], f"coronal row {y}")):
        axes.imshow(image, cmap="gray", origin="upper" if axes is axial else "lower", aspect="auto")
        shown = np.ma.masked_equal(mask, 0)
        axes.imshow((shown - 1) % 10, cmap=colours, vmin=0, vmax=9, alpha=0.45,
                    origin="upper" if axes is axial else "lower", aspect="auto", interpolation="nearest")
        axes.set_title(title, fontsize=10)
        axes.axis("off")
    for box in case.boxes:  # x0, y0, z0, x1, y1, z1: the prompts, where they cross the axial slice
        x0, y0, z0, x1, y1, z1 = box
        if z0 <= z <= z1:
            axial.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1))
    figure.suptitle(f"QMedSAM engine, default model {segmenter.entry.name}: {len(case.boxes)} box prompts "
                    f"propagated in 3D on a CT ({CASE.stem})", fontsize=10)
    figure.text(0.5, 0.015, "Rendered with matplotlib from the engine's output (the computation the Segment Editor "
                "effect runs); not a capture of the Slicer window.", ha="center", fontsize=8, style="italic")
    figure.tight_layout(rect=(0, 0.04, 1, 0.95))
    OUT.parent.mkdir(exist_ok=True)
    figure.savefig(OUT)
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
