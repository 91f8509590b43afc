"""The click protocol (training/clicks/protocol.py) run through the OpenVINO engine instead of torch.

Same objects, same click placement (protocol.click_rounds / next_click), same scores; each mask comes from
`Segmenter.segment_2d(image, [box], [clicks])`: the box alone through the model's own box decoder (round 0
is the engine's box-only mask), each later round through the catalogue's click decoder on the model's
cached embedding and the local click rule (qmedsam.click_rule, as the protocol's box+clicks+local variant).
So it measures what a user of the engine gets, e.g. the default INT8 model:

    python -m training.clicks.engine_protocol --out docs/measurements/clicks-engine-int8-rule.json
    python -m training.clicks.engine_protocol --model litemedsam-fp32 \\
        --out docs/measurements/clicks-engine-fp32-rule.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from qmedsam.bench import machine_info
from qmedsam.catalogue import find_click_decoder
from qmedsam.engine import Segmenter

from training.clicks.protocol import (
    MAX_ROUNDS,
    case_list,
    click_rounds,
    read_case_2d,
    score_objects,
    summarise,
    write_results,
)
from training.datasets.cases import DEFAULT_DATA, DEFAULT_DATA_IN_REPO, discover
from training.provenance import invoked_command, library_versions


def engine_rounds(segmenter: Segmenter, image: np.ndarray, rounds: int):
    """(box, truth) -> the object's (mask, clicks) rounds, each mask from one engine call on the cached image."""
    def object_rounds(box: np.ndarray, truth: np.ndarray):
        def segment(clicks: list) -> np.ndarray:
            return segmenter.segment_2d(image, box[None], [[(c.x, c.y, c.positive) for c in clicks]]) == 1
        return click_rounds(segment, truth, rounds)
    return object_rounds


def run(segmenter: Segmenter, data: Path, cases: Optional[set], rounds: int) -> dict:
    files = [f for f in discover([data]) if f.kind == "2D" and (cases is None or f.case in cases)]
    if not files:
        raise SystemExit(f"no 2D cases under {data}" + (" from the given case list" if cases else ""))
    objects = []
    for f in files:
        image, boxes, gts = read_case_2d(f.image_path, f.label_path)
        objects += score_objects(f.image_path.stem, boxes, gts, engine_rounds(segmenter, image, rounds))
    return {"box+clicks": {"summary": summarise(objects, {f.case: f.modality for f in files}), "objects": objects}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="catalogue model for the encoder and box-only decoder "
                        "(default: the catalogue's default)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"evaluation layout (default "
                        f"{DEFAULT_DATA_IN_REPO})")
    parser.add_argument("--split", type=Path, help="split.yaml: evaluate only the cases of --part")
    parser.add_argument("--part", default="test", help="which list of --split (default test)")
    parser.add_argument("--rounds", type=int, default=MAX_ROUNDS)
    parser.add_argument("--brush", choices=["on", "off", "engine"], default="engine",
                        help="the click rule's brush for clicks the decoder does not follow (default: the engine's)")
    parser.add_argument("--click-models-dir", type=Path, default=None,
                        help="catalogue folder whose click decoder to use (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=2, help="OpenVINO threads (default 2)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    args = parser.parse_args(argv)
    segmenter = Segmenter(args.model, threads=args.threads)
    if args.brush != "engine":
        segmenter.click_brush = args.brush == "on"
    if args.click_models_dir is not None:
        segmenter.use_click_decoder(find_click_decoder(args.click_models_dir))
    started = time.time()
    variants = run(segmenter, args.data, case_list(args.split, args.part), args.rounds)
    decoder = segmenter.click_decoder.entry
    result = {
        "command": invoked_command(),
        "model": f"OpenVINO engine: {segmenter.entry.name} (encoder, box-only decoder) + click decoder "
                 f"{decoder.name} ({decoder.record['source_checkpoint']['file']}, step "
                 f"{decoder.record['source_checkpoint']['step']})",
        "model_sha256": {**segmenter.entry.sha256, **decoder.sha256},
        "protocol": "training/clicks/protocol.py's (click_rounds, next_click, score_objects), each mask from "
                    "Segmenter.segment_2d(image, [box], [clicks]): box-only mask, then the clicks one at a time "
                    "through the click decoder and the local click rule (qmedsam.click_rule; its brush as "
                    "click_brush says); no mask prompt",
        "click_brush": segmenter.click_brush,
        "cpu": machine_info(args.threads)["cpu"], "threads": args.threads,
        "versions": library_versions("openvino", "numpy"),
        "seconds": round(time.time() - started, 1),
        "variants": variants,
    }
    write_results(args.out, result)
    for group, scores in variants["box+clicks"]["summary"].items():
        print(f"{group:12s} n={scores['objects']:3d} DSC {' '.join(f'{v:.3f}' for v in scores['dsc'])}"
              f"  AUC {scores['dsc_auc']:.3f}")
    print(json.dumps({"seconds": result["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
