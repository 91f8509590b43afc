"""Encoder and decoder latency of several models, interleaved in one run (medians), with the CPU that ran them.

    python -m training.evaluation.int8_speed litemedsam-fp32 litemedsam-int8-ptq litemedsam-nncf-int8 \\
        --json docs/measurements/int8-speed.json

`qmedsam bench` times one model after another; this VM's speed drifts between minutes, so to decide whether
one INT8 model is faster than another each repeat runs every model's encoder, 1-box decoder and 16-box
decoder in turn, and the medians compare like with like. Input: a real CT slice of shared/data and the
bench's 16 boxes. A model is a catalogue name or folder:name (training.evaluation.quant_table.segmenter_for).

    python -m training.evaluation.int8_speed litemedsam-fp32 litemedsam-int8-ptq --isas native AVX2

With --isas the models run once per instruction-set cap (oneDNN reads ONEDNN_MAX_CPU_ISA once per process):
one worker process per cap, all started before timing, and each repeat times every worker in turn, so the
caps are interleaved like the models (one worker runs at a time; the others wait on their input).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from qmedsam.bench import format_machine, machine_info
from qmedsam.npz_io import load_npz_case
from qmedsam.preprocess import to_model_input

from training.datasets.cases import DEFAULT_DATA
from training.evaluation.quant_table import segmenter_for
from training.provenance import invoked_command

DEFAULT_IMAGE = DEFAULT_DATA / "imgs" / "2DBox_CT_sammed2d-amos000475.npz"
BOXES = np.array([[20 + 8 * i, 30 + 5 * i, 120 + 6 * i, 150 + 4 * i] for i in range(16)], np.float32)
STAGES = ("encoder_ms", "decoder_1_ms", "decoder_16_ms")


def _ms(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return 1000 * (time.perf_counter() - started)


class _Timer:
    """The compiled models of this process, warmed up; `one_repeat` times each stage of each model once."""

    def __init__(self, models: list[str], image: np.ndarray, threads: int):
        self.pairs = {model: segmenter_for(model, threads).runtime for model in models}
        self.model_input = to_model_input(image)[0]
        self.embeddings = {model: pair.encode(self.model_input) for model, pair in self.pairs.items()}  # warm-up
        for model, pair in self.pairs.items():
            pair.decode(self.embeddings[model], BOXES)

    def one_repeat(self) -> dict:
        times = {}
        for model, pair in self.pairs.items():
            embedding = self.embeddings[model]
            times[model] = {"encoder_ms": _ms(pair.encode, self.model_input),
                            "decoder_1_ms": _ms(pair.decode, embedding, BOXES[:1]),
                            "decoder_16_ms": _ms(pair.decode, embedding, BOXES)}
        return times


def _medians(repeats: list[dict]) -> dict:
    """[{model: {stage: ms}}] per repeat -> {model: {stage: median ms}}."""
    return {model: {stage: round(statistics.median(run[model][stage] for run in repeats), 1) for stage in STAGES}
            for model in repeats[0]}


def interleaved_medians(models: list[str], image: np.ndarray, repeats: int, threads: int) -> dict:
    timer = _Timer(models, image, threads)
    return _medians([timer.one_repeat() for _ in range(repeats)])


def _worker_env(isa: str) -> dict:
    """The environment of a worker whose oneDNN kernels are capped at `isa` ('native': no cap)."""
    env = dict(os.environ)
    if isa.lower() == "native":
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        env["QMEDSAM_ISA"] = "native"
    else:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return env


def interleaved_medians_per_isa(models: list[str], image_path: Path, repeats: int, threads: int,
                                isas: list[str]) -> dict:
    """{isa: {model: {stage: median ms}}}, each cap in a worker process of its own, the caps interleaved."""
    command = [sys.executable, "-m", "training.evaluation.int8_speed", *models, "--image", str(image_path),
               "--threads", str(threads), "--worker"]
    workers = {isa: subprocess.Popen(command, env=_worker_env(isa), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=Path(__file__).resolve().parents[2]) for isa in isas}
    runs = {isa: [] for isa in isas}
    try:
        for _ in range(repeats):
            for isa, worker in workers.items():
                worker.stdin.write("time\n")
                worker.stdin.flush()
                line = worker.stdout.readline()
                if not line:
                    raise RuntimeError(f"the {isa} worker stopped (exit {worker.wait()})")
                runs[isa].append(json.loads(line))
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()
    return {isa: _medians(repeats) for isa, repeats in runs.items()}


def _serve(models: list[str], image: np.ndarray, threads: int) -> None:
    """Worker: compile and warm up, then one repeat per input line, its times as one JSON line."""
    timer = _Timer(models, image, threads)
    for _ in sys.stdin:
        print(json.dumps(timer.one_repeat()), flush=True)


def _table(medians: dict) -> list[str]:
    return ["| model | encoder ms | decoder 1 box ms | decoder 16 boxes ms |", "|---|---:|---:|---:|"] + [
        f"| `{model}` | " + " | ".join(f"{row[stage]:.1f}" for stage in STAGES) + " |"
        for model, row in medians.items()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a 2D case .npz")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--isas", nargs="+", default=None,
                        help="instruction-set caps to compare, e.g. native AVX2 (a worker process each)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        _serve(args.models, load_npz_case(args.image).image, args.threads)
        return
    machine = machine_info(args.threads)
    lines = format_machine(machine)
    if args.isas:
        medians = interleaved_medians_per_isa(args.models, args.image, args.repeats, args.threads, args.isas)
        lines.append(f"medians of {args.repeats}, models and caps interleaved in each repeat")
        for isa, per_model in medians.items():
            lines += ["", f"ONEDNN_MAX_CPU_ISA {isa}:", "", *_table(per_model)]
    else:
        medians = interleaved_medians(args.models, load_npz_case(args.image).image, args.repeats, args.threads)
        lines += [f"medians of {args.repeats}, models interleaved in each repeat", "", *_table(medians)]
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": invoked_command(), "machine": machine, "repeats": args.repeats,
                                         "isas": args.isas, "medians": medians}, indent=1) + "\n")


if __name__ == "__main__":
    main()
