"""Post-training quantization with Brevitas: recipe → calibrate on real images → QCDQ → OpenVINO catalogue.

    python -m training.quantization.ptq --recipe training/configs/recipe-int8.yaml --name litemedsam-int8-ptq \
        --data ../pool --split training/configs/split.yaml --part train --per-modality 3 --seed 0 --default
    python -m training.quantization.ptq --recipe training/configs/recipe-paper.yaml --name ptq-paper \
        --models-dir runs/qat/models

This is the baseline that quantization-aware training must beat, and the starting point of QAT (the
same calibration initialises its learned activation scales). Calibration items come from
training/datasets/calibration_set.py (2D images with their boxes; 3D slices inside the boxes' z ranges):
with --split, only the cases of its --part list (train by default, never test), and with --per-modality N a
seeded draw of N of them per modality (--seed), so that several draws measure the calibration's spread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch
import yaml

from training.catalogue_writer import MODELS_DIR, cases_seen, record_model
from training.datasets.calibration_set import calibration_items, draw_cases
from training.datasets.cases import (
    DEFAULT_DATA,
    SYNTHETIC_CASE_PREFIX,
    add_split_arguments,
    cases_from_split,
    split_cases,
    split_record,
)
from training.litemedsam import load_litemedsam
from training.litemedsam.weights import SOURCE_CHECKPOINT
from training.provenance import REPO_ROOT, invoked_command, library_versions
from training.quantization.export_qcdq import convert_quantized, runtime_precisions, save_pair
from training.quantization.quantize import QuantRecipe, prepare_quantized


def load_recipe(path: Path) -> QuantRecipe:
    with open(path, encoding="utf-8") as stream:
        return QuantRecipe.from_dict(yaml.safe_load(stream))


def quantized_model(recipe: QuantRecipe, items) -> tuple[torch.nn.Module, list[dict]]:
    model = load_litemedsam().eval()
    batches = [(torch.from_numpy(item.image), torch.from_numpy(item.boxes)) for item in items]
    return model, prepare_quantized(model, recipe, batches).layers


def _is_synthetic(items) -> bool:
    return all(item.case.startswith(SYNTHETIC_CASE_PREFIX) for item in items)


def ptq_entry(recipe: QuantRecipe, report: list[dict], items, description: str, default: bool = False,
              selection: dict | None = None) -> dict:
    """The catalogue facts of a PTQ model: its recipe, what was quantized, and what it was calibrated on.

    `selection` says how the calibration cases were chosen (split file and list, draw per modality, seed).
    """
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
                             "boxes": int(sum(len(item.boxes) for item in items)), **(selection or {})},
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


def calibration_cases(args: argparse.Namespace) -> tuple:
    """(case names or None for all, how they were chosen) from --split/--part and --per-modality/--seed."""
    cases = cases_from_split(args)
    selection = {"data": _shown(args.data)}
    if args.split is not None:
        selection["split"] = split_record(args)
    if args.per_modality is not None:
        cases = draw_cases(args.data, cases, args.per_modality, args.seed)
        selection.update(per_modality=args.per_modality, seed=args.seed)
    return cases, selection


def _shown(path: Path) -> str:
    """A data folder as the repository's files write it: relative to the repository root (e.g. ../pool)."""
    return Path(os.path.relpath(Path(path).resolve(), REPO_ROOT)).as_posix()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=REPO_ROOT / "training" / "configs" / "recipe-int8.yaml")
    parser.add_argument("--name", default="litemedsam-int8-ptq")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--exclude", nargs="*", default=[], help="case names (or parts) left out of calibration")
    add_split_arguments(parser, "train")
    parser.add_argument("--per-modality", type=int, default=None, metavar="N",
                        help="calibrate on N cases per modality drawn with --seed (default: every case)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --per-modality draw")
    parser.add_argument("--selected-on", choices=("validation",), default=None,
                        help="the recipe/draw exported here was chosen on this list of --split (recorded in "
                             "models.json's cases_seen)")
    parser.add_argument("--selection-split", type=Path, default=None, metavar="FILE",
                        help="the split file of --selected-on when it is not --split (data-free calibration: "
                             "synthetic images are in no split, the validation list of FILE still chose the model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--default", action="store_true", help="make this the catalogue's default model")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                        help="catalogue folder (default: the extension's shipped models)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    recipe = load_recipe(args.recipe)
    cases, selection = calibration_cases(args)
    items = calibration_items(args.data, cases, exclude=args.exclude)
    model, report = quantized_model(recipe, items)
    calibrated = time.perf_counter()
    description = "LiteMedSAM, Brevitas post-training quantization (QCDQ), calibrated on " + (
        "DFQ-SAM synthetic images (data-free)" if _is_synthetic(items) else "real images")
    entry = ptq_entry(recipe, report, items, description, default=args.default, selection=selection)
    entry["recipe_file"] = args.recipe.resolve().relative_to(REPO_ROOT).as_posix()
    if args.selected_on:
        chosen_by = args.selection_split or args.split
        if chosen_by is None:
            parser.error("--selected-on needs --split or --selection-split (the file whose list chose the model)")
        page = "docs/dfq-sam.md" if _is_synthetic(items) else "docs/quantization.md"
        entry["cases_seen"] = cases_seen(chosen_by, calibration=entry["calibration_data"]["cases"],
                                         selection=split_cases(chosen_by, args.selected_on),
                                         note=f"recipe and calibration draw chosen on the {args.selected_on} list "
                                              f"({page})")
    entry = export_to_catalogue(model, args.name, entry, args.models_dir)
    print(f"{args.name}: {entry['quantized_layers']} layers quantized, {len(entry['float_layers'])} float; "
          f"calibration {calibrated - started:.0f} s, export {time.perf_counter() - calibrated:.0f} s")
    for part, counts in entry["runtime_precisions"].items():
        print(f"  {part} runs: " + ", ".join(f"{k} x{v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
