"""Encoder and decoder latency of several models, interleaved in one run (medians), with the CPU that ran them.

    python -m training.int8_speed litemedsam-fp32 litemedsam-int8-ptq litemedsam-nncf-int8 \\
        --json docs/measurements/int8-speed.json

`qmedsam bench` times one model after another; this VM's speed drifts between minutes, so to decide whether
one INT8 model is faster than another each repeat runs every model's encoder, 1-box decoder and 16-box
decoder in turn, and the medians compare like with like. Input: a real CT slice of shared/data and the
bench's 16 boxes. A model is a catalogue name or folder:name (training.quant_table.segmenter_for).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from qmedsam.bench import format_machine, machine_info
from qmedsam.npz_io import load_npz_case
from qmedsam.preprocess import to_model_input

from training.data import DEFAULT_DATA
from training.provenance import invoked_command
from training.quant_table import segmenter_for

DEFAULT_IMAGE = DEFAULT_DATA / "imgs" / "2DBox_CT_sammed2d-amos000475.npz"
BOXES = np.array([[20 + 8 * i, 30 + 5 * i, 120 + 6 * i, 150 + 4 * i] for i in range(16)], np.float32)
STAGES = ("encoder_ms", "decoder_1_ms", "decoder_16_ms")


def _ms(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return 1000 * (time.perf_counter() - started)


def interleaved_medians(models: list[str], image: np.ndarray, repeats: int, threads: int) -> dict:
    pairs = {model: segmenter_for(model, threads).runtime for model in models}
    model_input = to_model_input(image)[0]
    embeddings = {model: pair.encode(model_input) for model, pair in pairs.items()}  # also the warm-up
    for model, pair in pairs.items():
        pair.decode(embeddings[model], BOXES)
    times = {model: {stage: [] for stage in STAGES} for model in models}
    for _ in range(repeats):
        for model, pair in pairs.items():
            embedding = embeddings[model]
            times[model]["encoder_ms"].append(_ms(pair.encode, model_input))
            times[model]["decoder_1_ms"].append(_ms(pair.decode, embedding, BOXES[:1]))
            times[model]["decoder_16_ms"].append(_ms(pair.decode, embedding, BOXES))
    return {model: {stage: round(statistics.median(values), 1) for stage, values in stages.items()}
            for model, stages in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a 2D case .npz")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    machine = machine_info(args.threads)
    medians = interleaved_medians(args.models, load_npz_case(args.image).image, args.repeats, args.threads)
    lines = format_machine(machine) + [
        f"medians of {args.repeats}, models interleaved in each repeat", "",
        "| model | encoder ms | decoder 1 box ms | decoder 16 boxes ms |", "|---|---:|---:|---:|"]
    lines += [f"| `{model}` | " + " | ".join(f"{row[stage]:.1f}" for stage in STAGES) + " |"
              for model, row in medians.items()]
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": invoked_command(), "machine": machine, "repeats": args.repeats,
                                         "medians": medians}, indent=1) + "\n")


if __name__ == "__main__":
    main()
