"""A grid of synthetic calibration images with their evolved labels (contours) and boxes, as one PNG.

    python -m training.dfq.grid runs/dfq/synthetic docs/images/dfq-synthetic.png --count 8
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402  (matplotlib's own dependency)
from qmedsam.npz_io import npz_files_in, read_npz_arrays  # noqa: E402


def draw_grid(folder: Path, output: Path, count: int = 8, columns: int = 4) -> int:
    """Draws up to `count` cases of a synthetic set; returns how many were drawn."""
    paths = npz_files_in(folder / "imgs")[:count]
    if not paths:
        raise SystemExit(f"no synthetic images in {folder / 'imgs'}; run python -m training.dfq.synth first")
    rows = -(-len(paths) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, path in zip(axes.flat, paths):
        case = read_npz_arrays(path, ("imgs", "boxes"))
        gts = read_npz_arrays(folder / "gts" / path.name, ("gts",), role="Labels", needs="labels hold 'gts'")["gts"]
        image, boxes = case["imgs"], case["boxes"]
        ax.imshow(image)
        for label, color in zip(range(1, int(gts.max()) + 1), ("#ff3b30", "#34c759", "#0a84ff")):
            ax.contour(gts == label, levels=[0.5], colors=[color], linewidths=1.2)
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=0.8))
        ax.set_title(path.stem.rsplit("-", 1)[-1], fontsize=8)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    # 256 colours: the figure holds few, and a third of the bytes matters in a repository with a clone budget
    Image.open(buffer).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(output, optimize=True)
    return len(paths)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--columns", type=int, default=4)
    args = parser.parse_args(argv)
    print(f"{draw_grid(args.folder, args.output, args.count, args.columns)} images drawn to {args.output}")


if __name__ == "__main__":
    main()
