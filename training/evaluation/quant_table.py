"""Per-modality DSC/NSD of several models on the labelled cases, as one table (the QMedSAM paper's Table 7).

    python -m training.evaluation.quant_table litemedsam-fp32 litemedsam-int8-ptq runs/qat/models:qat-stage1 \\
        --held-out pyradiomics-lung1 ISIC0027001 --json docs/measurements/int8-table.json

A model is a catalogue name, or `FOLDER:name` for a catalogue elsewhere (per-stage QAT exports). Each case
is segmented by the engine and scored by the same code as `qmedsam evaluate` (mean over a case's labels,
then over cases). `--held-out` names cases (or parts of names) that no model trained or calibrated on;
their mean is a column of its own. Speed is not in this table (compare_models and bench time models
interleaved in one run); the JSON keeps each model's engine seconds for reference.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
from qmedsam.engine import Segmenter, segment_case
from qmedsam.evaluate import score_case
from qmedsam.npz_io import load_npz_case

from training.datasets.cases import DEFAULT_DATA
from training.provenance import REPO_ROOT


def parse_model_spec(spec: str) -> tuple[Optional[Path], str, str]:
    """'name' of the shipped catalogue or 'folder:name' of a catalogue folder inside the repo (runs/...),
    optionally with '@bf16' (bf16 arithmetic) -> (catalogue folder or None, name, inference precision)."""
    model, _, precision = spec.partition("@")
    folder, _, name = model.rpartition(":")
    return (REPO_ROOT / folder) if folder else None, name, precision or "f32"


def segmenter_for(spec: str, threads: int) -> Segmenter:
    """The engine for a model spec (parse_model_spec)."""
    models_dir, name, precision = parse_model_spec(spec)
    return Segmenter(name, threads=threads, models_dir=models_dir, inference_precision=precision)


def score_model(spec: str, data: Path, threads: int, keep: Optional[Path] = None) -> dict:
    """Per-case DSC/NSD of one model; `keep`: a folder that keeps its segmentations (else they are dropped)."""
    engine = segmenter_for(spec, threads)
    rows, seconds = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
        for path in sorted((data / "imgs").glob("*.npz")):
            case = load_npz_case(path)
            started = time.perf_counter()
            segs = segment_case(engine, case.kind, case.image, case.boxes)
            seconds += time.perf_counter() - started
            pred = (keep or Path(tmp)) / path.name
            np.savez_compressed(pred, segs=segs)
            result = score_case(case.name, pred, data / "gts" / path.name)
            rows.append({"case": case.name, "modality": result.modality, "dsc": result.dsc, "nsd": result.nsd})
    return {"model": spec, "cases": rows, "engine_seconds": round(seconds, 1)}


def mean_score(rows, key, keep=lambda row: True) -> float:
    values = [row[key] for row in rows if keep(row)]
    return float(np.mean(values)) if values else float("nan")


def markdown(results: list[dict], held_out: list[str]) -> str:
    modalities = sorted({row["modality"] for row in results[0]["cases"]})
    is_held_out = lambda row: any(part in row["case"] for part in held_out)  # noqa: E731
    header = ["model", *modalities, "mean DSC", "mean NSD"] + (["held-out DSC"] if held_out else [])
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for result in results:
        rows = result["cases"]
        cells = [f"{mean_score(rows, 'dsc', lambda r, m=m: r['modality'] == m):.4f}" for m in modalities]
        cells += [f"{mean_score(rows, 'dsc'):.4f}", f"{mean_score(rows, 'nsd'):.4f}"]
        if held_out:
            cells.append(f"{mean_score(rows, 'dsc', is_held_out):.4f}")
        lines.append(f"| `{result['model']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--held-out", nargs="*", default=[], metavar="CASE")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write every case's scores here")
    args = parser.parse_args(argv)

    results = []
    for spec in args.models:
        results.append(score_model(spec, args.data, args.threads))
        print(f"{spec}: mean DSC {mean_score(results[-1]['cases'], 'dsc'):.4f}", flush=True)
    print(markdown(results, args.held_out))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"held_out": args.held_out, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
