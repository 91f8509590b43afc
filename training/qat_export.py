"""A QAT checkpoint → QCDQ ONNX → OpenVINO model folder with its catalogue entry.

    python -m training.qat_export --checkpoint runs/qat/stage3/best.pt --name litemedsam-int8-qat
    python -m training.qat_export --checkpoint runs/qat/stage1/best.pt --name qat-stage1 --models-dir runs/qat/models

The second form writes an evaluation-only catalogue outside the extension, for per-stage tables
(`qmedsam segment --models-dir runs/qat/models --model qat-stage1 ...`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from training.catalogue_writer import MODELS_DIR
from training.litemedsam.weights import SOURCE_CHECKPOINT
from training.provenance import invoked_command, library_versions
from training.ptq import export_to_catalogue
from training.qat_checkpoint import model_from_checkpoint
from training.quantize import QuantRecipe


def catalogue_entry(checkpoint: dict, default: bool) -> dict:
    recipe = checkpoint["recipe"]
    history = checkpoint["history"]
    return {
        "precision": QuantRecipe.from_dict(recipe).precision,
        "calibration": "qat",
        "default": default,
        "description": f"LiteMedSAM, Brevitas quantization-aware training (QMedSAM stage {checkpoint['stage']}), "
                       "QCDQ",
        "source_checkpoint": SOURCE_CHECKPOINT,
        "recipe": recipe,
        "quantized_parts": checkpoint["quantized_parts"],
        "qat": {"stage": checkpoint["stage"], "best_epoch": checkpoint["best"]["epoch"],
                "val_dice": round(checkpoint["best"]["val_dice"], 4), "epochs": len(history),
                "train_seconds": round(sum(r["seconds"] for r in history)),
                "train_cases": checkpoint["train_cases"], "val_cases": checkpoint["val_cases"],
                "config": checkpoint["config"], "command": checkpoint["command"],
                "world_size": checkpoint["world_size"], "versions": checkpoint["versions"]},
        "command": invoked_command(),
        "versions": library_versions("torch", "brevitas", "onnx", "openvino"),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a stage's best.pt")
    parser.add_argument("--name", required=True)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                        help="catalogue folder (default: the extension's shipped models)")
    parser.add_argument("--default", action="store_true", help="make this the catalogue's default model")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model, checkpoint = model_from_checkpoint(args.checkpoint)
    args.models_dir.mkdir(parents=True, exist_ok=True)
    entry = export_to_catalogue(model, args.name, catalogue_entry(checkpoint, args.default), args.models_dir)
    print(f"{args.name}: stage {checkpoint['stage']} epoch {checkpoint['epoch']} -> {args.models_dir / args.name}")
    for part, counts in entry["runtime_precisions"].items():
        print(f"  {part} runs: " + ", ".join(f"{k} x{v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
