"""DFQ-SAM's comparison: bit width x calibration data x scale reparameterization, one table on shared/data.

    python -m training.dfq.table --synthetic runs/dfq/synthetic --out runs/dfq/models \\
        --json docs/measurements/dfq-table.json

For every bit width (encoder W8A8, W6A6, W4A4; decoder 8-bit) and every calibration source
  noise      the Gaussian-noise images the synthesis starts from (same seeds, same boxes),
  synthetic  the DFQ-SAM images (training/dfq/synth.py),
  real       labelled training cases of shared/data (never the 5 validation cases),
each with the same number of images, the model is quantized with our recipe (training/configs/recipe-int8.yaml)
with and without DFQ-SAM's quantizer (scale reparameterization + log-√2 post-softmax), calibrated,
exported through the shipped QCDQ → OpenVINO path into --out, and scored per modality by the engine.
--ablation adds each half of DFQ-SAM's quantizer alone. Each finished model is scored once: an interrupted
run picks up at the next model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from training.datasets.calibration_set import CalibrationItem, calibration_items, spread
from training.dfq.synth import SynthesisConfig, starting_point
from training.evaluation.paired_bootstrap import per_case_agreement
from training.evaluation.quant_table import markdown, mean_score, score_model
from training.provenance import REPO_ROOT, invoked_command
from training.quantization.ptq import DEFAULT_DATA, export_to_catalogue, load_recipe, ptq_entry, quantized_model
from training.quantization.quantize import QuantRecipe

VALIDATION_CASES = ("pyradiomics-lung1", "ISIC0027001", "kvasir-cju0roawvklr", "pyradiomics-brain1", "hc18-100")
BASE_RECIPE = REPO_ROOT / "training" / "configs" / "recipe-int8.yaml"
SOURCES = ("noise", "synthetic", "real")
# Quantizer variants, as model-name suffix -> (scale reparameterization, log-√2 post-softmax). The main grid
# compares our recipe with DFQ-SAM's whole quantizer; the ablation tells which half does the work.
QUANTIZERS = {"": (False, False), "-reparam": (True, True)}
ABLATION = {"-reparam-only": (True, False), "-log2-only": (False, True)}
VARIANTS = {**QUANTIZERS, **ABLATION}


def noise_items(count: int, seed: int = SynthesisConfig.seed) -> list[CalibrationItem]:
    """The synthesis' starting points: the same noise and boxes as image i of a synthetic set of that seed."""
    items = []
    for index in range(count):
        image, _, boxes = starting_point(SynthesisConfig(seed=seed), index)
        items.append(CalibrationItem(f"noise-{index:04d}", None, image[None], np.stack(boxes)))
    return items


def source_items(source: str, count: int, synthetic: Path, data: Path) -> list[CalibrationItem]:
    if source == "noise":
        return noise_items(count)
    if source == "synthetic":
        items = calibration_items(synthetic)
        if len(items) < count:
            raise SystemExit(f"{synthetic} holds {len(items)} synthetic images, fewer than --images {count}; "
                             f"make more with python -m training.dfq.synth --out {synthetic} --count {count}")
        return items[:count]
    items = calibration_items(data, exclude=VALIDATION_CASES)
    return [items[i] for i in spread(len(items), count)]  # slices of every training case, spread evenly


def variant_recipe(base: QuantRecipe, bits: int, quantizer: str) -> QuantRecipe:
    """Our recipe at encoder W{bits}A{bits} (decoder 8-bit) with the quantizer variant named by its suffix."""
    reparameterize, log2_softmax = VARIANTS[quantizer]
    return QuantRecipe.from_dict(dict(base.to_dict(), weight_bits=bits, act_bits=bits, mask_decoder_bits=8,
                                      reparameterize=reparameterize, log2_softmax=log2_softmax))


def model_name(bits: int, source: str, quantizer: str) -> str:
    return f"w{bits}a{bits}-{source}{quantizer}"


def agreement_with(reference: Path, segs: Path) -> float:
    """Mean over cases of the label-wise Dice between a model's masks and the reference (FP32) masks."""
    return float(np.mean(list(per_case_agreement(reference, segs).values())))


def build_and_score(name: str, recipe: QuantRecipe, items, out: Path, data: Path, threads: int) -> dict:
    started = time.perf_counter()
    model, report = quantized_model(recipe, items)
    calibrated = time.perf_counter()
    entry = ptq_entry(recipe, report, items, f"LiteMedSAM, DFQ-SAM comparison model {name}")
    export_to_catalogue(model, name, entry, out)
    exported = time.perf_counter()
    spec = f"{out.resolve().relative_to(REPO_ROOT).as_posix()}:{name}"
    scored = dict(score_model(spec, data, threads, keep=out / "segs" / name), model=name)
    scored["seconds"] = {"calibration": round(calibrated - started), "export": round(exported - calibrated)}
    return scored


def summary(results: list[dict], bits_list, sources) -> str:
    """Mean DSC (and agreement with FP32's masks) as a grid: a row per bit width, a column per calibration
    source and quantizer."""
    header = [f"{source}{' + reparam' if quantizer else ''}" for source in sources for quantizer in QUANTIZERS]
    lines = ["| encoder | " + " | ".join(header) + " |", "|---" + "|---:" * len(header) + "|"]
    for bits in bits_list:
        names = [model_name(bits, source, quantizer) for source in sources for quantizer in QUANTIZERS]
        lines.append(f"| W{bits}A{bits} | " + " | ".join(_cells(results, names)) + " |")
    return "\n".join(lines)


def ablation_summary(results: list[dict], bits_list, sources) -> str:
    """The same cells with each half of DFQ-SAM's quantizer alone: a row per bit width and source."""
    variants = {"": "neither", "-reparam-only": "reparam only", "-log2-only": "log-√2 only", "-reparam": "both"}
    lines = ["| encoder | calibration | " + " | ".join(variants.values()) + " |", "|---|---" + "|---:" * 4 + "|"]
    for bits in bits_list:
        for source in sources:
            names = [model_name(bits, source, quantizer) for quantizer in variants]
            lines.append(f"| W{bits}A{bits} | {source} | " + " | ".join(_cells(results, names)) + " |")
    return "\n".join(lines)


def _cells(results: list[dict], names: list[str]) -> list[str]:
    """'mean DSC (agreement with FP32)' for each named model, or – where it was not computed."""
    rows = {r["model"]: r for r in results}
    return ["–" if n not in rows else f"{mean_score(rows[n]['cases'], 'dsc'):.4f} ({rows[n]['agreement']:.3f})"
            for n in names]


def table_order(results: list[dict]) -> list[dict]:
    """FP32 first, then the grid by bit width (widest first), calibration source and quantizer, then extras."""
    order = list(VARIANTS)
    grid = {model_name(bits, source, quantizer): (bits, SOURCES.index(source), order.index(quantizer))
            for bits in (8, 6, 4) for source in SOURCES for quantizer in VARIANTS}

    def key(result: dict) -> tuple:
        name = result["model"]
        if name in grid:
            bits, source, quantizer = grid[name]
            return (1, -bits, source, quantizer)
        return (0,) if name == "litemedsam-fp32" else (2, name)

    return sorted(results, key=key)


def _exported(out: Path) -> set:
    catalogue = out / "models.json"
    return {m["name"] for m in json.loads(catalogue.read_text())["models"]} if catalogue.exists() else set()


def _save(path: Path, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": invoked_command(), "held_out": list(VALIDATION_CASES),
                                "results": results}, indent=1) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", type=Path, default=REPO_ROOT / "runs" / "dfq" / "synthetic")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "dfq" / "models",
                        help="catalogue folder for the comparison models (inside the repo)")
    parser.add_argument("--images", type=int, default=8, help="calibration images per source")
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4])
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "docs" / "measurements" / "dfq-table.json")
    parser.add_argument("--extra", nargs="*", default=[], metavar="NAME",
                        help="more models of the --out catalogue to score (e.g. the data-free QAT export)")
    parser.add_argument("--ablation", action="store_true",
                        help="also each half of DFQ-SAM's quantizer alone (reparameterization, log-√2 softmax)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    base = load_recipe(BASE_RECIPE)
    results = json.loads(args.json.read_text())["results"] if args.json.exists() else []
    out_spec = args.out.resolve().relative_to(REPO_ROOT).as_posix()
    segs = args.out / "segs"
    # Rows from an earlier run whose masks were not kept are scored again from their exported files.
    results = [r for r in results if (segs / r["model"]).is_dir()]
    done = {result["model"] for result in results}
    for spec in ["litemedsam-fp32"] + [f"{out_spec}:{name}" for name in args.extra] + \
            [f"{out_spec}:{name}" for name in _exported(args.out) - done]:
        name = spec.rpartition(":")[2]
        if name not in done:
            results.append(dict(score_model(spec, args.data, args.threads, keep=segs / name), model=name))
            done.add(name)
            _save(args.json, results)
    quantizers = [*QUANTIZERS, *(ABLATION if args.ablation else ())]
    for bits in args.bits:
        for source in args.sources:
            items = source_items(source, args.images, args.synthetic, args.data)
            for quantizer in quantizers:
                name = model_name(bits, source, quantizer)
                if name in done:
                    continue
                results.append(build_and_score(name, variant_recipe(base, bits, quantizer), items,
                                               args.out, args.data, args.threads))
                mean = mean_score(results[-1]["cases"], "dsc")
                print(f"{name}: mean DSC {mean:.4f} ({results[-1]['seconds']})", flush=True)
                _save(args.json, results)
    for result in results:
        result["agreement"] = agreement_with(segs / "litemedsam-fp32", segs / result["model"])
    results = table_order(results)
    _save(args.json, results)
    print(markdown(results, list(VALIDATION_CASES)))
    print(summary(results, args.bits, args.sources))
    if args.ablation:
        print(ablation_summary(results, args.bits, args.sources))


if __name__ == "__main__":
    main()
