"""Does a model give the same masks on every CPU? Each model runs once per instruction-set cap, compared per case.

    python -m training.evaluation.isa_agreement litemedsam-int8-ptq litemedsam-nncf-int8 litemedsam-fp32 \\
        --isas AVX2 AVX512_CORE AVX512_CORE_VNNI --json docs/measurements/isa-agreement.json

OpenVINO's CPU plugin (oneDNN) honours ONEDNN_MAX_CPU_ISA, read once per process, so one machine stands in
for older CPUs: every (model, ISA) pair runs in a subprocess of its own (`--worker`), which segments the
cases with the engine and keeps each case's masks and the embedding of its first image (2D) or middle slice
(3D). Reported per case and ISA pair: label Dice between the masks (as compare_models) and the embedding's
relative L2 difference. A cap above what the CPU has changes nothing, so the ISAs must exist on this CPU.

The cap is not a faithful older CPU: OpenVINO 2026.4's MVN, RMS and Reduce kernels keep their AVX-512 code
under it (docs/int8.md). `qemu:CPU` (e.g. `qemu:Haswell-v4`) runs the worker under QEMU's user-mode emulator
(`qemu-x86_64`, Debian package qemu-user) as that CPU instead, so every library sees its instruction set;
about 10-50x slower, so give it a few --cases.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from qmedsam.bench import machine_info
from qmedsam.engine import segment_case
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import load_npz_case
from qmedsam.preprocess import to_model_input

from training.catalogue_writer import repo_relative, set_field
from training.datasets.cases import DEFAULT_DATA
from training.evaluation.quant_table import segmenter_for
from training.provenance import invoked_command

DEFAULT_ISAS = ("AVX2", "AVX512_CORE", "AVX512_CORE_VNNI")


def run_worker(model: str, data: Path, cases: list[str] | None, out: Path, threads: int) -> None:
    """In this process (its ISA cap already set): masks and first embedding of every case, into `out`."""
    engine = segmenter_for(model, threads)
    arrays = {}
    for path in case_paths(data, cases):
        case = load_npz_case(path)
        arrays[f"mask/{case.name}"] = segment_case(engine, case.kind, case.image, case.boxes)
        image = case.image if case.kind == "2D" else case.image[len(case.image) // 2]
        arrays[f"embedding/{case.name}"] = engine.runtime.encode(to_model_input(image)[0])
    np.savez_compressed(out, **arrays)


def case_paths(data: Path, cases: list[str] | None) -> list[Path]:
    paths = sorted((data / "imgs").glob("*.npz"))
    return [p for p in paths if cases is None or any(part in p.stem for part in cases)]


def run_under_isa(model: str, isa: str, data: Path, cases: list[str] | None, out: Path, threads: int = 2) -> None:
    """`run_worker` in a subprocess whose oneDNN kernels are capped at `isa`, or emulating CPU for `qemu:CPU`."""
    command = [sys.executable, "-m", "training.evaluation.isa_agreement", "--worker", model, "--data", str(data),
               "--out", str(out), "--threads", str(threads)] + (["--cases", *cases] if cases else [])
    if isa.startswith("qemu:"):
        command = ["qemu-x86_64", "-cpu", isa.removeprefix("qemu:"), *command]
        env = {name: value for name, value in os.environ.items() if name != "ONEDNN_MAX_CPU_ISA"}
    else:
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA=isa)
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        raise RuntimeError(f"{model} under {isa} failed (exit {done.returncode}): {done.stderr[-2000:]}")


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(a)), 1e-12))


def compare_runs(runs: dict) -> list[dict]:
    """Per case and ISA pair: mask label Dice and embedding relative L2 ({isa: npz arrays} in)."""
    rows = []
    for first, second in itertools.combinations(runs, 2):
        a, b = runs[first], runs[second]
        for key in sorted(k for k in a if k.startswith("mask/")):
            case = key.split("/", 1)[1]
            rows.append({"case": case, "isas": f"{first} vs {second}", "dice": label_agreement(a[key], b[key]),
                         "embedding_rel_l2": relative_l2(a[f"embedding/{case}"], b[f"embedding/{case}"])})
    return rows


def measure(model: str, isas, data: Path, cases: list[str] | None, threads: int = 2) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for isa in isas:
            out = Path(tmp) / f"{isa}.npz"
            run_under_isa(model, isa, data, cases, out, threads)
            with np.load(out) as arrays:
                runs[isa] = {key: arrays[key] for key in arrays.files}
    return compare_runs(runs)


def summary(model: str, rows: list[dict]) -> list[str]:
    lines = []
    for pair in dict.fromkeys(row["isas"] for row in rows):
        mine = [row for row in rows if row["isas"] == pair]
        dice = [row["dice"] for row in mine]
        worst = min(mine, key=lambda row: row["dice"])
        lines.append(f"| `{model}` | {pair} | {np.mean(dice):.4f} | {worst['dice']:.4f} ({worst['case']}) | "
                     f"{sum(d >= 0.99 for d in dice)}/{len(dice)} | "
                     f"{np.mean([row['embedding_rel_l2'] for row in mine]):.4f} |")
    return lines


def verified_isas(rows: list[dict], isas, artifact: Path | None, threads: int = 2) -> dict:
    """What models.json records of one model's cross-ISA check: per ISA pair the mask Dice over the cases."""
    pairs = {}
    for pair in dict.fromkeys(row["isas"] for row in rows):
        dice = [row["dice"] for row in rows if row["isas"] == pair]
        pairs[pair] = {"mask_dice_mean": round(float(np.mean(dice)), 4), "mask_dice_min": round(min(dice), 4),
                       "cases_at_least_0.99": sum(d >= 0.99 for d in dice), "cases": len(dice),
                       "identical": all(d == 1.0 for d in dice)}
    machine = machine_info(threads)
    return {"isas": list(isas), "cpu": machine["cpu"], "openvino": machine.get("versions", {}).get("openvino"),
            "stand_in": "ONEDNN_MAX_CPU_ISA caps on this CPU (qemu: prefixes emulate a CPU)",
            "pairs": pairs, "artifact": repo_relative(artifact) if artifact else None,
            "command": invoked_command()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL", help="catalogue name or folder:name")
    parser.add_argument("--isas", nargs="+", default=list(DEFAULT_ISAS))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cases", nargs="*", default=None, help="case names (or parts); default: all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--record", action="store_true",
                        help="write the result into each catalogue model's models.json entry (verified_isas)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        run_worker(args.models[0], args.data, args.cases, args.out, args.threads)
        return
    print("| model | ISAs | mask Dice, mean | worst case | cases >= 0.99 | embedding rel. L2, mean |\n"
          "|---|---|---:|---:|---:|---:|")
    results = {}
    for model in args.models:
        results[model] = measure(model, args.isas, args.data, args.cases, args.threads)
        print("\n".join(summary(model, results[model])), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": invoked_command(), "isas": args.isas, "results": results},
                                        indent=1) + "\n")
    if args.record:
        for model, rows in results.items():
            if ":" not in model:  # only the shipped catalogue's models
                set_field(model.partition("@")[0], "verified_isas",
                          verified_isas(rows, args.isas, args.json, args.threads))


if __name__ == "__main__":
    main()
