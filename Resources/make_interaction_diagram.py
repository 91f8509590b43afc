"""Draws Resources/QMedSAMInteraction.png, the interaction diagram of the README; run once, the PNG is committed.

    python Resources/make_interaction_diagram.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

STEPS = [
    (0.7, 2.2, "Mouse over a slice", "background: OpenVINO encodes\nthis slice asynchronously"),
    (3.3, 2.2, "Drag a box", "rubber band in the view;\nbox computed in volume IJK"),
    (5.9, 2.2, "Preview", "this slice: decoder only if prefetched\n3D: ± N slices, progress + Stop"),
    (8.5, 2.9, "Apply (Enter)", "saveStateForUndo once,\nthen modify segment; Ctrl+Z undoes"),
    (8.5, 1.5, "Cancel (Esc)", "preview discarded,\nsegment unchanged"),
]


def main():
    figure, axes = plt.subplots(figsize=(11, 3.6), dpi=100)
    axes.set_xlim(0, 10.6)
    axes.set_ylim(0.6, 3.9)
    axes.axis("off")
    for x, y, title, detail in STEPS:
        axes.add_patch(FancyBboxPatch((x - 0.05, y - 0.45), 2.1, 0.9, boxstyle="round,pad=0.05",
                                      facecolor="#fff6cc" if title.startswith("Preview") else "#e8eef7",
                                      edgecolor="#34495e"))
        axes.text(x + 1.0, y + 0.2, title, ha="center", va="center", fontsize=11, weight="bold")
        axes.text(x + 1.0, y - 0.18, detail, ha="center", va="center", fontsize=8)
    for (x0, y0), (x1, y1) in [((2.8, 2.2), (3.2, 2.2)), ((5.4, 2.2), (5.8, 2.2)), ((8.0, 2.3), (8.4, 2.9)),
                               ((8.0, 2.1), (8.4, 1.5))]:
        axes.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14, color="#34495e"))
    axes.add_patch(FancyArrowPatch((6.9, 2.7), (4.4, 2.7), connectionstyle="arc3,rad=0.5", arrowstyle="-|>",
                                   mutation_scale=12, color="#7f8c8d"))
    axes.text(5.65, 3.55, "another box adds to the preview (x drops the last)", ha="center", fontsize=8,
              color="#555")
    figure.tight_layout()
    figure.savefig(Path(__file__).resolve().parent / "QMedSAMInteraction.png")


if __name__ == "__main__":
    main()
