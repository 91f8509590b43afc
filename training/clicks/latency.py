"""Decoder latency per click: what a click costs once the slice is encoded (issue 17, the Slicer preview).

One box of a real case, 0..5 clicks (prefixes of one list of 5), the image already in the engine's embedding
cache (the Slicer effect encodes the slice under the mouse in the background), median of --repeats calls after a
warm-up:
- `segment_2d`, new click: what the effect's preview pays for click n when clicks 1..n-1 were refined before
  (the engine's click-prefix cache, qmedsam.click_cache: hash lookups and one click-decoder call with its four
  token masks back to full size, then the local click rule);
- `segment_2d`, replay: the same call with the click-prefix cache emptied first (the box-only decoder, then one
  click-decoder call per click), as before the cache;
- the decoder call alone (the box-only decoder for 0 clicks, one click-decoder call with all 1..5 clicks).

    python -m training.clicks.latency --threads 2 --out docs/measurements/clicks-engine-latency-prefix-cache.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from qmedsam.bench import _median_ms, format_machine, machine_info
from qmedsam.catalogue import find_click_decoder
from qmedsam.engine import Segmenter
from qmedsam.npz_io import load_npz_case
from qmedsam.preprocess import boxes_to_model_space, points_to_model_space

from training.datasets.cases import DEFAULT_DATA
from training.provenance import invoked_command

CASE = "2DBox_US_hc18-000"  # 540 x 800 ultrasound, one box
MAX_CLICKS = 5


def click_positions(box: np.ndarray, count: int) -> list:
    """`count` clicks spread across the box, alternating positive and negative."""
    xs = np.linspace(box[0], box[2], count + 2)[1:-1]
    ys = np.linspace(box[1], box[3], count + 2)[1:-1]
    return [(float(x), float(y), int(i % 2 == 0)) for i, (x, y) in enumerate(zip(xs, ys))]


def measure(segmenter: Segmenter, image: np.ndarray, box: np.ndarray, repeats: int) -> list[dict]:
    height, width = image.shape[:2]
    encoded = segmenter.encode(image)  # the cache now holds the embedding: every call below is a hit
    box_256 = boxes_to_model_space(box[None], height, width)
    all_clicks = click_positions(box, MAX_CLICKS)
    rows = []
    for count in range(MAX_CLICKS + 1):
        clicks = all_clicks[:count]
        if count == 0:
            decoder = partial(segmenter.runtime.decode, encoded.embedding, box_256)
        else:
            points = points_to_model_space(np.array(clicks)[None, :, :2], height, width)
            labels = np.array(clicks, np.float32)[None, :, 2]
            decoder = partial(segmenter.click_decoder.decode, encoded.embedding, box_256, points, labels)
        preview = partial(segmenter.segment_2d, image, box[None], [clicks])
        before = all_clicks[:max(count - 1, 0)]

        def earlier_clicks_refined(before=before):
            segmenter.click_prefixes.clear()
            segmenter.segment_2d(image, box[None], [before])

        rows.append({"clicks": count,
                     "segment_2d_new_click_ms": round(_median_ms(preview, repeats, 2, earlier_clicks_refined), 1),
                     "segment_2d_replay_ms": round(_median_ms(preview, repeats, 2, segmenter.click_prefixes.clear), 1),
                     "decoder_ms": round(_median_ms(decoder, repeats, warmup=2), 1)})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="catalogue model (default: the catalogue's default)")
    parser.add_argument("--case", default=CASE, help=f"2D case of --data (default {CASE})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--click-models-dir", type=Path, default=None,
                        help="catalogue folder whose click decoder to use (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=2, help="OpenVINO threads (default 2)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per row (default 20)")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    case = load_npz_case(args.data / "imgs" / f"{args.case}.npz")
    segmenter = Segmenter(args.model, threads=args.threads)
    if args.click_models_dir is not None:
        segmenter.use_click_decoder(find_click_decoder(args.click_models_dir))
    machine = machine_info(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = measure(segmenter, case.image, np.asarray(case.boxes[0], np.float64), args.repeats)
    print("\n".join(format_machine(machine)))
    print(f"model {segmenter.entry.name}, click decoder {segmenter.click_decoder.entry.name}, case {args.case} "
          f"{case.image.shape[1]}x{case.image.shape[0]}, 1 box, load average {load:.1f}")
    print("clicks  segment_2d new click ms  segment_2d replay ms  decoder alone ms")
    for row in rows:
        print(f"{row['clicks']:6d}  {row['segment_2d_new_click_ms']:23.1f}  {row['segment_2d_replay_ms']:20.1f}  "
              f"{row['decoder_ms']:16.1f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": invoked_command(), "machine": machine, "load_average_1min": load,
                                        "model": segmenter.entry.name, "case": args.case, "repeats": args.repeats,
                                        "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
