"""DFQ-SAM's comparison: bit width x calibration data x scale reparameterization, one table on shared/data.

    python -m training.dfq_table --synthetic runs/dfq/synthetic --out runs/dfq/models \\
        --json docs/measurements/dfq-table.json

For every bit width (encoder W8A8, W6A6, W4A4; decoder 8-bit) and every calibration source
  noise      the Gaussian-noise images the synthesis starts from (same seeds, same boxes),
  synthetic  the DFQ-SAM images (training/dfq_synth.py),
  real       labelled training cases of shared/data (never the 5 validation cases),
each with the same number of images, the model is quantized with our recipe (training/configs/recipe-int8.yaml)
with and without DFQ-SAM's quantizer (scale reparameterization + log-√2 post-softmax), calibrated,
exported through the shipped QCDQ → OpenVINO path into --out, and scored per modality by the engine.
Each finished model is scored once: an interrupted run picks up at the next model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from qmedsam.metrics import label_agreement

from training.calibration_set import CalibrationItem, calibration_items, spread
from training.catalogue_writer import REPO_ROOT, invoked_command, library_versions
from training.dfq_synth import SynthesisConfig, starting_point
from training.litemedsam.weights import SOURCE_CHECKPOINT
from training.ptq import DEFAULT_DATA, export_to_catalogue, load_recipe, quantized_model
from training.quant_table import markdown, mean_score, score_model
from training.quantize import QuantRecipe

VALIDATION_CASES = ("pyradiomics-lung1", "ISIC0027001", "kvasir-cju0roawvklr", "pyradiomics-brain1", "hc18-100")
BASE_RECIPE = REPO_ROOT / "training" / "configs" / "recipe-int8.yaml"
SOURCES = ("noise", "synthetic", "real")


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
                             f"make more with python -m training.dfq_synth --out {synthetic} --count {count}")
        return items[:count]
    items = calibration_items(data, exclude=VALIDATION_CASES)
    return [items[i] for i in spread(len(items), count)]  # slices of every training case, spread evenly


def variant_recipe(base: QuantRecipe, bits: int, dfq_quantizer: bool) -> QuantRecipe:
    return QuantRecipe.from_dict(dict(base.to_dict(), weight_bits=bits, act_bits=bits, mask_decoder_bits=8,
                                      reparameterize=dfq_quantizer, log2_softmax=dfq_quantizer))


def model_name(bits: int, source: str, dfq_quantizer: bool) -> str:
    return f"w{bits}a{bits}-{source}" + ("-reparam" if dfq_quantizer else "")


def agreement_with(reference: Path, segs: Path) -> float:
    """Mean over cases of the label-wise Dice between a model's masks and the reference (FP32) masks."""
    values = []
    for path in sorted(reference.glob("*.npz")):
        with np.load(path, allow_pickle=False) as a, np.load(segs / path.name, allow_pickle=False) as b:
            values.append(label_agreement(a["segs"], b["segs"]))
    return float(np.mean(values))


def build_and_score(name: str, recipe: QuantRecipe, items, out: Path, data: Path, threads: int) -> dict:
    started = time.perf_counter()
    model, report = quantized_model(recipe, items)
    calibrated = time.perf_counter()
    export_to_catalogue(model, name, {
        "precision": recipe.precision,
        "calibration": "ptq",
        "default": False,
        "description": f"LiteMedSAM, DFQ-SAM comparison model {name}",
        "source_checkpoint": SOURCE_CHECKPOINT,
        "recipe": recipe.to_dict(),
        "quantized_layers": sum(row["quantized"] for row in report),
        "calibration_data": {"items": len(items), "cases": sorted({item.case for item in items})},
        "command": invoked_command(),
        "versions": library_versions("torch", "brevitas", "onnx", "openvino"),
    }, out)
    exported = time.perf_counter()
    spec = f"{out.resolve().relative_to(REPO_ROOT).as_posix()}:{name}"
    scored = dict(score_model(spec, data, threads, keep=out / "segs" / name), model=name)
    scored["seconds"] = {"calibration": round(calibrated - started), "export": round(exported - calibrated)}
    return scored


def summary(results: list[dict], bits_list, sources) -> str:
    """Mean DSC (and agreement with FP32's masks) as a grid: a row per bit width, a column per calibration
    source and quantizer."""
    means = {r["model"]: mean_score(r["cases"], "dsc") for r in results}
    agreement = {r["model"]: r.get("agreement") for r in results}
    header = [f"{source}{' + reparam' if dfq else ''}" for source in sources for dfq in (False, True)]
    lines = ["| encoder | " + " | ".join(header) + " |", "|---" + "|---:" * len(header) + "|"]
    for bits in bits_list:
        names = [model_name(bits, source, dfq) for source in sources for dfq in (False, True)]
        cells = ["–" if n not in means else f"{means[n]:.4f} ({agreement[n]:.3f})" for n in names]
        lines.append(f"| W{bits}A{bits} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    for bits in args.bits:
        for source in args.sources:
            items = source_items(source, args.images, args.synthetic, args.data)
            for dfq_quantizer in (False, True):
                name = model_name(bits, source, dfq_quantizer)
                if name in done:
                    continue
                results.append(build_and_score(name, variant_recipe(base, bits, dfq_quantizer), items,
                                               args.out, args.data, args.threads))
                mean = mean_score(results[-1]["cases"], "dsc")
                print(f"{name}: mean DSC {mean:.4f} ({results[-1]['seconds']})", flush=True)
                _save(args.json, results)
    for result in results:
        result["agreement"] = agreement_with(segs / "litemedsam-fp32", segs / result["model"])
    _save(args.json, results)
    print(markdown(results, list(VALIDATION_CASES)))
    print(summary(results, args.bits, args.sources))


if __name__ == "__main__":
    main()
