"""How long a box release takes to show its mask, with and without the background prefetch.

Runs the same steps as the effect on release (oriented, windowed slice -> finish any prefetch of it ->
segment_2d) on a real slice. Usable from a shell or from Slicer's Python console:

    python -m QMedSAMSlicerLib.prefetch_benchmark CASE.npz [--threads 2] [--repeats 5]
    (with QMedSAMSlicer/ on sys.path; CASE.npz = a challenge 3DBox_*.npz, its first box is used)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from qmedsam.engine import EmbeddingCache, Segmenter, middle_slice
from qmedsam.npz_io import read_npz_arrays

from .background_encoder import BackgroundEncoder

SCENARIOS = ("new slice, no prefetch", "new slice, mouse arrived 500 ms before release", "slice already viewed")


def release_to_mask(segmenter, encoder, image, box) -> float:
    """Seconds from release to mask, as the effect does it."""
    start = time.perf_counter()
    encoder.finish(image)
    segmenter.segment_2d(image, box)
    return time.perf_counter() - start


def measure(segmenter, image: np.ndarray, box: np.ndarray, repeats: int = 5, dwell_s: float = 0.5) -> dict:
    """Median latency (ms) per scenario; each repeat starts from an empty embedding cache."""
    box = np.asarray(box, np.float64).reshape(1, 4)
    results = {name: [] for name in SCENARIOS}
    for _ in range(repeats):
        for name in SCENARIOS:
            segmenter.cache = EmbeddingCache(512)
            encoder = BackgroundEncoder(segmenter)
            if name != SCENARIOS[0]:
                encoder.request(image)  # the mouse enters the slice
                if name == SCENARIOS[1]:
                    time.sleep(dwell_s)  # the user drags the box meanwhile
                else:
                    while encoder.poll():
                        time.sleep(0.005)
            results[name].append(release_to_mask(segmenter, encoder, image, box))
    return {name: 1000 * statistics.median(times) for name, times in results.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="challenge 3DBox_*.npz (imgs D,H,W uint8; boxes N,6)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    case = read_npz_arrays(args.case, ("imgs", "boxes"))
    x_min, y_min, z_min, x_max, y_max, z_max = case["boxes"][0]
    image = np.ascontiguousarray(case["imgs"][middle_slice(z_min, z_max)])
    segmenter = Segmenter(args.model, threads=args.threads)
    segmenter.segment_2d(image, [[x_min, y_min, x_max, y_max]])  # warm-up: first inference allocates
    print(f"model {segmenter.entry.name}, slice {image.shape}, threads {args.threads or 'auto'}, "
          f"median of {args.repeats}")
    for name, ms in measure(segmenter, image, [x_min, y_min, x_max, y_max], args.repeats).items():
        print(f"  release -> mask, {name}: {ms:.0f} ms")


if __name__ == "__main__":
    main()
