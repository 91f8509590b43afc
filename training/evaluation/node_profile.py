"""Where an OpenVINO model spends its time: a per-node profile (PERF_COUNT) of the encoder and the 16-box decoder,
summed by (node type, kernel), for two or more catalogue models side by side (issue 13, INT8 speed).

The int8_speed benchmark says which model is slower; this says which kernels make the difference, e.g. the
per-box image projections an unfolded decoder computes, or a Transpose left on a float tensor. One thread, so
that other work on the machine disturbs the ratios less (--threads to compare at more); medians of --repeats
runs per node.

    python -m training.evaluation.node_profile litemedsam-int8-ptq litemedsam-nncf-int8 \\
        --json docs/measurements/node-profile.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import openvino as ov
from qmedsam.bench import format_machine, machine_info
from qmedsam.catalogue import find_model
from qmedsam.npz_io import load_npz_case
from qmedsam.preprocess import to_model_input

from training.evaluation.int8_speed import BOXES, DEFAULT_IMAGE
from training.evaluation.quant_table import parse_model_spec
from training.provenance import invoked_command
from training.quantization.export_qcdq import runtime_layers

SETTINGS = {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY"}
COUNTED = ("FakeQuantize", "Reorder", "Transpose", "Convert", "FullyConnected", "MatMul", "Subgraph")


def profile(compiled: ov.CompiledModel, inputs: dict, repeats: int) -> dict:
    """Wall-time median and, per (node type, kernel), the summed per-node medians (ms) and node counts."""
    request = compiled.create_infer_request()
    request.infer(inputs)  # warm-up
    times, kinds, walls = defaultdict(list), {}, []
    for _ in range(repeats):
        started = time.perf_counter()
        request.infer(inputs)
        walls.append(1000 * (time.perf_counter() - started))
        for info in request.get_profiling_info():
            times[info.node_name].append(info.real_time.total_seconds() * 1000)
            kinds[info.node_name] = f"{info.node_type} {info.exec_type}"
    by_kind = defaultdict(lambda: [0.0, 0])
    for node, values in times.items():
        by_kind[kinds[node]][0] += float(np.median(values))
        by_kind[kinds[node]][1] += 1
    layers = Counter(layer for _, layer, _ in runtime_layers(compiled))
    return {"wall_ms": round(float(np.median(walls)), 1),
            "by_kind": {kind: {"ms": round(ms, 2), "nodes": n} for kind, (ms, n) in
                        sorted(by_kind.items(), key=lambda item: -item[1][0])},
            "runtime_nodes": {name: layers.get(name, 0) for name in COUNTED}}


def settings_for(threads: int) -> dict:
    return dict(SETTINGS, INFERENCE_NUM_THREADS=threads)


def profile_models(names: Sequence[str], repeats: int, threads: int = 1) -> dict:
    core = ov.Core()
    settings = settings_for(threads)
    image = to_model_input(load_npz_case(DEFAULT_IMAGE).image)[0]
    result = {}
    for name in names:
        models_dir, model, _ = parse_model_spec(name)
        entry = find_model(model, models_dir)
        encoder = core.compile_model(str(entry.folder / entry.encoder), "CPU", settings)
        decoder = core.compile_model(str(entry.folder / entry.decoder), "CPU", settings)
        embedding = encoder.create_infer_request().infer({0: image})[encoder.output(0)]
        result[name] = {"encoder": profile(encoder, {0: image}, repeats),
                        "decoder_16_boxes": profile(decoder, {0: embedding, 1: BOXES}, repeats)}
    return result


def print_comparison(result: dict, rows: int = 12) -> None:
    names = list(result)
    for part in ("encoder", "decoder_16_boxes"):
        print(f"\n{part}: wall " + ", ".join(f"{n} {result[n][part]['wall_ms']} ms" for n in names))
        kinds = {kind for n in names for kind in result[n][part]["by_kind"]}
        spread = {k: [result[n][part]["by_kind"].get(k, {"ms": 0.0})["ms"] for n in names] for k in kinds}
        print(f"{'node type, kernel':40s} " + " ".join(f"{n[-22:]:>22s}" for n in names) + "  (ms, nodes)")
        for kind in sorted(kinds, key=lambda k: (min(spread[k]) - max(spread[k]), -max(spread[k])))[:rows]:
            cells = [result[n][part]["by_kind"].get(kind, {"ms": 0.0, "nodes": 0}) for n in names]
            print(f"{kind[:40]:40s} " + " ".join(f"{c['ms']:15.1f} ({c['nodes']:3d})" for c in cells))
        for n in names:
            print(f"  {n}: runtime nodes {result[n][part]['runtime_nodes']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="catalogue names or folder:name (as int8_speed)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per node median (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="OpenVINO threads (default 1: least disturbed)")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON")
    args = parser.parse_args(argv)
    machine = machine_info(args.threads)
    print("\n".join(format_machine(machine)))
    result = profile_models(args.models, args.repeats, args.threads)
    print_comparison(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": invoked_command(), "machine": machine, "repeats": args.repeats,
                                         "settings": settings_for(args.threads), "models": result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
