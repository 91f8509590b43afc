"""Post-training quantization with Brevitas: recipe → calibrate on real images → QCDQ → OpenVINO catalogue.

    python -m training.ptq --recipe training/configs/recipe-int8.yaml --name litemedsam-int8-ptq
    python -m training.ptq --recipe training/configs/recipe-paper.yaml --name ptq-paper --models-dir runs/qat/models

This is the baseline that quantization-aware training must beat, and the starting point of QAT (the
same calibration initialises its learned activation scales). Calibration items come from
training/calibration_set.py (2D images with their boxes; 3D slices inside the boxes' z ranges).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
import yaml

from training.calibration_set import calibration_items
from training.catalogue_writer import MODELS_DIR, record_model
from training.data import DEFAULT_DATA, SYNTHETIC_CASE_PREFIX
from training.export_qcdq import convert_quantized, runtime_precisions, save_pair
from training.litemedsam import load_litemedsam
from training.litemedsam.weights import SOURCE_CHECKPOINT
from training.provenance import REPO_ROOT, invoked_command, library_versions
from training.quantize import QuantRecipe, prepare_quantized


def load_recipe(path: Path) -> QuantRecipe:
    with open(path, encoding="utf-8") as stream:
        return QuantRecipe.from_dict(yaml.safe_load(stream))


def quantized_model(recipe: QuantRecipe, items) -> tuple[torch.nn.Module, list[dict]]:
    model = load_litemedsam().eval()
    batches = [(torch.from_numpy(item.image), torch.from_numpy(item.boxes)) for item in items]
    return model, prepare_quantized(model, recipe, batches).layers


def _is_synthetic(items) -> bool:
    return all(item.case.startswith(SYNTHETIC_CASE_PREFIX) for item in items)


def ptq_entry(recipe: QuantRecipe, report: list[dict], items, description: str, default: bool = False) -> dict:
    """The catalogue facts of a PTQ model: its recipe, what was quantized, and what it was calibrated on."""
    return {
        "precision": recipe.precision,
        "calibration": "ptq",
        "default": default,
        "description": description,
        "source_checkpoint": SOURCE_CHECKPOINT,
        "recipe": recipe.to_dict(),
        "quantized_layers": sum(row["quantized"] for row in report),
        "float_layers": [row["layer"] + f" ({row['reason']})" for row in report if not row["quantized"]],
        "calibration_data": {"items": len(items), "cases": sorted({item.case for item in items}),
                             "boxes": int(sum(len(item.boxes) for item in items))},
        "command": invoked_command(),
        "versions": library_versions("torch", "brevitas", "onnx", "openvino"),
    }


def export_to_catalogue(model: torch.nn.Module, name: str, entry: dict, models_dir: Path = MODELS_DIR) -> dict:
    encoder, decoder, facts = convert_quantized(model)
    folder = models_dir / name
    shutil.rmtree(folder, ignore_errors=True)
    save_pair(encoder, decoder, folder)
    precisions = {part: runtime_precisions(folder / f"{part}.xml") for part in ("encoder", "decoder")}
    return record_model(dict(entry, name=name, folder=name, encoder="encoder.xml", decoder="decoder.xml",
                             export=facts, runtime_precisions=precisions), models_dir)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=REPO_ROOT / "training" / "configs" / "recipe-int8.yaml")
    parser.add_argument("--name", default="litemedsam-int8-ptq")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--exclude", nargs="*", default=[], help="case names (or parts) left out of calibration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--default", action="store_true", help="make this the catalogue's default model")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                        help="catalogue folder (default: the extension's shipped models)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    recipe = load_recipe(args.recipe)
    items = calibration_items(args.data, exclude=args.exclude)
    model, report = quantized_model(recipe, items)
    calibrated = time.perf_counter()
    description = "LiteMedSAM, Brevitas post-training quantization (QCDQ), calibrated on " + (
        "DFQ-SAM synthetic images (data-free)" if _is_synthetic(items) else "real images")
    entry = ptq_entry(recipe, report, items, description, default=args.default)
    entry["recipe_file"] = args.recipe.resolve().relative_to(REPO_ROOT).as_posix()
    entry = export_to_catalogue(model, args.name, entry, args.models_dir)
    print(f"{args.name}: {entry['quantized_layers']} layers quantized, {len(entry['float_layers'])} float; "
          f"calibration {calibrated - started:.0f} s, export {time.perf_counter() - calibrated:.0f} s")
    for part, counts in entry["runtime_precisions"].items():
        print(f"  {part} runs: " + ", ".join(f"{k} x{v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
