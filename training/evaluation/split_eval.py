"""Per-case DSC, NSD and agreement with FP32 of catalogue models on one list of the split file.

    python -m training.evaluation.split_eval --split training/configs/split.yaml --part test \\
        litemedsam-fp32 litemedsam-nncf-int8 litemedsam-int8-ptq \\
        --json docs/measurements/test-split.json --markdown docs/measurements/test-split.md

The cases of the list are looked up by name in the --data folders (default: the training pool ../pool, then
../shared/data); a listed case that none of them holds stops the run. Every model segments every case with
the engine (f32 arithmetic, --threads), scored by the code of `qmedsam evaluate` (qmedsam.evaluate.score_case:
DSC and NSD, the mean over a case's labels); agreement with the reference model (default litemedsam-fp32) is
the label-wise Dice between the two models' masks (qmedsam.metrics.label_agreement, compare_models' number).

Masks are kept under --segs/<model>-<encoder sha256 prefix>/<case>.npz, so a later run (a new model) reuses
the reference's masks instead of segmenting again; a rebuilt model has a new sha256 and a new folder. The
JSON holds the command, the CPU and library versions, the split file's sha256, every case's scores, and
each model's means over all cases, over the pool's cases and over ../shared/data's 16 cases: the recipes
were chosen on those 16 before the split existed, so the pool's test cases are the ones no decision saw.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from qmedsam.bench import machine_info
from qmedsam.catalogue import find_model
from qmedsam.engine import segment_case
from qmedsam.evaluate import score_case
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import load_npz_case, read_npz_arrays

from training.datasets.cases import (
    DEFAULT_DATA,
    SPLIT_FILE_IN_REPO,
    add_split_arguments,
    cases_from_split,
    split_record,
)
from training.evaluation.quant_table import parse_model_spec, segmenter_for
from training.provenance import REPO_ROOT, invoked_command, library_versions, sha256_file

REFERENCE = "litemedsam-fp32"
DEFAULT_POOL = REPO_ROOT.parent / "pool"  # training/datasets/build_pool.py's default --out
DEFAULT_SEGS = REPO_ROOT / "runs" / "split-eval" / "segs"
SUBSETS = {"all": lambda row: True,
           "pool": lambda row: row["source"] != "shared",
           "shared": lambda row: row["source"] == "shared"}


def locate_cases(names: Sequence[str], roots: Sequence[Path]) -> dict[str, Path]:
    """{case: folder holding imgs/<case>.npz and gts/<case>.npz}, the first root that has it."""
    found = {}
    for name in sorted(names):
        folder = next((Path(root) for root in roots if (Path(root) / "imgs" / f"{name}.npz").is_file()), None)
        if folder is not None:
            found[name] = folder
    missing = sorted(set(names) - set(found))
    if missing:
        raise SystemExit(f"{len(missing)} case(s) of the split are in none of {', '.join(map(str, roots))} (first: "
                         f"{missing[0]}); build the pool (python -m training.datasets.build_pool) or pass --data.")
    return found


def _source(folder: Path) -> str:
    return "shared" if folder.resolve() == DEFAULT_DATA else "pool"


def model_key(spec: str) -> str:
    """'<name>-<12 hex of a hash of its files' sha256>[@bf16]': the masks of exactly this build and arithmetic."""
    models_dir, name, precision = parse_model_spec(spec)
    entry = find_model(name, models_dir)
    files = json.dumps(entry.sha256, sort_keys=True).encode()
    return f"{entry.name}-{hashlib.sha256(files).hexdigest()[:12]}" + ("" if precision == "f32" else f"@{precision}")


def segment_model(spec: str, cases: dict[str, Path], segs: Path, threads: int, log=print) -> None:
    """Masks of every case into segs; those already there are kept. Not timed: compare_models and int8_speed
    time models interleaved, which is what a speed comparison on a shared machine needs."""
    segs.mkdir(parents=True, exist_ok=True)
    todo = [name for name in cases if not (segs / f"{name}.npz").is_file()]
    engine = segmenter_for(spec, threads) if todo else None
    for count, name in enumerate(todo, 1):
        case = load_npz_case(cases[name] / "imgs" / f"{name}.npz")
        masks = segment_case(engine, case.kind, case.image, case.boxes)
        partial = segs / f"{name}.partial.npz"  # renamed when complete: an interrupted run leaves no mask
        np.savez_compressed(partial, segs=masks)
        partial.rename(segs / f"{name}.npz")
        if count % 10 == 0 or count == len(todo):
            log(f"{spec}: {count}/{len(todo)} cases segmented", flush=True)


def _masks(path: Path) -> np.ndarray:
    return read_npz_arrays(path, ["segs"], role="Masks", needs="masks hold 'segs'")["segs"]


def score_rows(cases: dict[str, Path], segs: Path, reference_segs: Path) -> list[dict]:
    """DSC, NSD (qmedsam evaluate) and agreement with the reference's masks, per case."""
    rows = []
    for name, folder in cases.items():
        result = score_case(name, segs / f"{name}.npz", folder / "gts" / f"{name}.npz")
        agreement = label_agreement(_masks(reference_segs / f"{name}.npz"), _masks(segs / f"{name}.npz"))
        rows.append({"case": name, "modality": result.modality, "source": _source(folder),
                     "dsc": result.dsc, "nsd": result.nsd, "agreement": agreement})
    return rows


def summarize(rows: list[dict]) -> dict:
    """Means of DSC, NSD and agreement over all cases, the pool's and shared/data's, and per modality."""
    def means(keep) -> dict:
        chosen = [row for row in rows if keep(row)]
        return {"cases": len(chosen), **{key: float(np.mean([row[key] for row in chosen])) if chosen else None
                                         for key in ("dsc", "nsd", "agreement")}}

    summary = {subset: means(keep) for subset, keep in SUBSETS.items()}
    summary["modality"] = {m: means(lambda row, m=m: row["modality"] == m)
                           for m in sorted({row["modality"] for row in rows})}
    return summary


def markdown(results: list[dict]) -> str:
    """Per-modality mean DSC, then the means over all/pool/shared cases and agreement with the reference."""
    modalities = sorted(results[0]["summary"]["modality"])
    counts = [results[0]["summary"]["modality"][m]["cases"] for m in modalities]
    subsets = results[0]["summary"]
    header = (["model"] + [f"{m} ({n})" for m, n in zip(modalities, counts)]
              + [f"DSC all ({subsets['all']['cases']})", f"DSC pool ({subsets['pool']['cases']})",
                 f"DSC shared ({subsets['shared']['cases']})", "NSD all", "agreement with FP32, mean (min)"])
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]

    def cell(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    names = [result["model"] for result in results]
    for result in results:
        summary = result["summary"]
        shown = f"`{result['model']}`" + (f" ({result['build']})" if names.count(result["model"]) > 1 else "")
        lowest = min(row["agreement"] for row in result["cases"])
        cells = [cell(summary["modality"][m]["dsc"]) for m in modalities]
        cells += [cell(summary[s]["dsc"]) for s in ("all", "pool", "shared")]
        cells += [cell(summary["all"]["nsd"]), f"{summary['all']['agreement']:.4f} ({lowest:.4f})"]
        lines.append(f"| {shown} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_split(models: Sequence[str], cases: dict[str, Path], segs_root: Path, threads: int,
                   reference: str = REFERENCE, log=print) -> list[dict]:
    """Per-case rows and summaries of each model; the reference is segmented first (its masks are reused)."""
    reference_segs = segs_root / model_key(reference)
    segment_model(reference, cases, reference_segs, threads, log)
    results = []
    for spec in models:
        key = model_key(spec)
        segment_model(spec, cases, segs_root / key, threads, log)
        rows = score_rows(cases, segs_root / key, reference_segs)
        results.append({"model": spec, "build": key, "cases": rows, "summary": summarize(rows)})
        log(f"{spec}: mean DSC {results[-1]['summary']['all']['dsc']:.4f}", flush=True)
    return results


def report(results: list[dict], args: argparse.Namespace, previous: Optional[dict] = None) -> dict:
    """The JSON document: provenance, then the results (earlier runs' builds kept unless measured again)."""
    kept = [r for r in (previous or {}).get("results", []) if r["build"] not in {x["build"] for x in results}]
    reference, threads = args.reference, args.threads
    return {"command": invoked_command(), "split": dict(split_record(args), sha256=sha256_file(args.split)),
            "reference": reference, "machine": machine_info(threads),
            "versions": library_versions("openvino", "numpy", "qmedsam"),
            "metrics": "DSC and NSD: qmedsam.evaluate.score_case (qmedsam evaluate); agreement: "
                       "qmedsam.metrics.label_agreement of the model's and the reference's masks",
            "results": kept + results}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="catalogue name, or FOLDER:name; NAME@bf16 runs it with bf16 arithmetic")
    add_split_arguments(parser, "test", evaluation=True)
    parser.set_defaults(split=REPO_ROOT / SPLIT_FILE_IN_REPO)
    parser.add_argument("--data", type=Path, nargs="+", default=[DEFAULT_POOL, DEFAULT_DATA],
                        help="folders holding imgs/ and gts/ (default: ../pool and ../shared/data)")
    parser.add_argument("--reference", default=REFERENCE, help="agreement is measured against this model's masks")
    parser.add_argument("--segs", type=Path, default=DEFAULT_SEGS, help="where masks are kept and reused")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None,
                        help="write every case's scores here (model builds of an earlier run in it are kept)")
    parser.add_argument("--markdown", type=Path, default=None, help="write the per-modality table here")
    args = parser.parse_args(argv)

    cases = locate_cases(cases_from_split(args), args.data)
    print(f"{len(cases)} cases of {args.part}: {sum(_source(f) == 'pool' for f in cases.values())} from the pool, "
          f"{sum(_source(f) == 'shared' for f in cases.values())} from ../shared/data", flush=True)
    results = evaluate_split(args.models, cases, args.segs, args.threads, args.reference)
    previous = json.loads(args.json.read_text()) if args.json and args.json.is_file() else None
    document = report(results, args, previous)
    table = markdown(document["results"])
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(f"`{document['command']}`\n\n{table}\n")


if __name__ == "__main__":
    main()
