"""Do catalogue models give the same masks as a reference? Per case: label Dice to the reference, differing pixels.

    python -m training.evaluation.compare_models litemedsam-fp32 litemedsam-fp16-weights --data ../shared/data
    python -m training.evaluation.compare_models litemedsam-fp32 litemedsam-fp32@bf16    # f32 vs bf16 arithmetic
    python -m training.evaluation.compare_models runs/dfq/models:w8a8-real runs/dfq/models:w8a8-real-log2-only
    python -m training.evaluation.compare_models litemedsam-fp32 runs/b1/models:ptq-int8-s0 \\
        runs/b1/models:ptq-int8-s1 --data ../pool --split training/configs/split.yaml --part validation --score \\
        --json runs/b1/val.json

The first model is the reference; every other one is compared with it. Used to decide whether a cheaper
model variant (fp16 weight storage, INT8) changes any mask, and what it gains: each case's wall time for
every model, measured interleaved in the same run (first run of each model includes nothing cached: every
case is a new image). `--score` also scores every model against the ground truth (DSC/NSD, the same code
as `qmedsam evaluate`); `--split/--part` keeps only one list of a split file; `--json` keeps every case.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from qmedsam.engine import segment_case
from qmedsam.evaluate import score_case
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import load_npz_case, npz_files_in

from training.datasets.cases import DEFAULT_DATA, add_split_arguments, cases_from_split, split_record
from training.evaluation.quant_table import segmenter_for
from training.provenance import invoked_command


def case_paths(data: Path, cases) -> list[Path]:
    """data/imgs/*.npz, only the named cases when `cases` is given (an error when none of them is there)."""
    paths = npz_files_in(Path(data) / "imgs")
    if cases is not None:
        paths = [p for p in paths if p.stem in cases]
        if not paths:
            raise SystemExit(f"none of the split's cases is under {data}/imgs; check --data against --split.")
    return paths


def _scores(case_name: str, segs: np.ndarray, gt_path: Path, folder: Path) -> dict:
    pred = folder / gt_path.name
    np.savez_compressed(pred, segs=segs)
    result = score_case(case_name, pred, gt_path)
    return {"dsc": result.dsc, "nsd": result.nsd}


def compare(specs: list[str], paths: list[Path], threads: int, score: bool) -> list[dict]:
    """One row per case: every model's seconds, each non-reference model's agreement with the reference."""
    engines = [segmenter_for(spec, threads) for spec in specs]
    reference, others = specs[0], specs[1:]
    print("| case | " + " | ".join(f"Dice vs {reference}: {spec}" for spec in others) + " | pixels that differ | "
          + " | ".join(f"s {spec}" for spec in specs) + " |")
    print("|---|" + "---:|" * (2 * len(specs)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            case = load_npz_case(path)
            row = {"case": case.name, "seconds": {}, "agreement": {}, "differing_pixels": {}}
            masks = {}
            for spec, engine in zip(specs, engines):  # interleaved, so machine drift affects every model alike
                started = time.perf_counter()
                masks[spec] = segment_case(engine, case.kind, case.image, case.boxes)
                row["seconds"][spec] = round(time.perf_counter() - started, 3)
            for spec in others:
                row["agreement"][spec] = label_agreement(masks[reference], masks[spec])
                row["differing_pixels"][spec] = int((masks[reference] != masks[spec]).sum())
            if score:
                gt_path = Path(path).parent.parent / "gts" / path.name
                row["scores"] = {spec: _scores(case.name, masks[spec], gt_path, Path(tmp)) for spec in specs}
            rows.append(row)
            print(f"| {case.name} | " + " | ".join(f"{row['agreement'][s]:.4f}" for s in others) + " | "
                  + " | ".join(str(row["differing_pixels"][s]) for s in others) + " | "
                  + " | ".join(f"{row['seconds'][s]:.2f}" for s in specs) + " |", flush=True)
    return rows


def summarize(specs: list[str], rows: list[dict]) -> dict:
    """Per model: mean and minimum agreement with the reference, total seconds, mean DSC/NSD when scored."""
    summary = {}
    for spec in specs:
        entry = {"seconds": round(sum(row["seconds"][spec] for row in rows), 1)}
        if spec != specs[0]:
            values = [row["agreement"][spec] for row in rows]
            entry.update(agreement_mean=float(np.mean(values)), agreement_min=float(np.min(values)),
                         worst_case=rows[int(np.argmin(values))]["case"],
                         differing_pixels=sum(row["differing_pixels"][spec] for row in rows))
        if "scores" in rows[0]:
            for key in ("dsc", "nsd"):
                entry[f"{key}_mean"] = float(np.mean([row["scores"][spec][key] for row in rows]))
        summary[spec] = entry
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_a", help="the reference model")
    parser.add_argument("model_b", nargs="+", help="one or more models compared with the reference")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    add_split_arguments(parser, "validation", evaluation=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score", action="store_true", help="also DSC/NSD of every model against the ground truth")
    parser.add_argument("--json", type=Path, default=None, help="write every case's numbers here")
    args = parser.parse_args(argv)

    specs = [args.model_a, *args.model_b]
    rows = compare(specs, case_paths(args.data, cases_from_split(args)), args.threads, args.score)
    summary = summarize(specs, rows)
    for spec, entry in summary.items():
        line = f"{spec}: {entry['seconds']:.1f} s"
        if "agreement_mean" in entry:
            line += (f", agreement with {specs[0]} {entry['agreement_mean']:.4f} (min {entry['agreement_min']:.4f}, "
                     f"{entry['worst_case']}), {entry['differing_pixels']} pixels differ")
        if "dsc_mean" in entry:
            line += f", DSC {entry['dsc_mean']:.4f} NSD {entry['nsd_mean']:.4f}"
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": invoked_command(), "reference": specs[0], "models": specs[1:],
                                         "split": split_record(args), "cases": len(rows), "summary": summary,
                                         "per_case": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
