"""A QAT checkpoint → QCDQ ONNX → OpenVINO model folder with its catalogue entry.

    python -m training.qat.export --checkpoint runs/qat/stage3/best.pt --name litemedsam-int8-qat
    python -m training.qat.export --checkpoint runs/qat/stage1/best.pt --name qat-stage1 --models-dir runs/qat/models

The second form writes an evaluation-only catalogue outside the extension, for per-stage tables
(`qmedsam segment --models-dir runs/qat/models --model qat-stage1 ...`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from training.catalogue_writer import MODELS_DIR, cases_seen
from training.datasets.cases import split_cases
from training.litemedsam.weights import SOURCE_CHECKPOINT
from training.provenance import REPO_ROOT, invoked_command, library_versions
from training.qat.checkpoint import load_checkpoint, model_from_checkpoint
from training.qat.train import checkpoint_seen
from training.quantization.ptq import export_to_catalogue
from training.quantization.quantize import QuantRecipe

SEEN_NOTE = ("over all QAT stages of the chain: calibration = cases of the images that set a newly quantized part's "
             "scales; training = cases the sampler drew in the epochs up to each stage's kept one; selection = "
             "validation cases whose Dice chose each stage's epoch")


def stage_chain(checkpoint: dict) -> list[dict]:
    """Stage 1 to this one, following each config's init_checkpoint: the command that ran it, the epoch it kept
    and its validation Dice per epoch (from the last.pt beside it when there: best.pt stops at the kept epoch)."""
    chain = []
    while True:
        last = REPO_ROOT / checkpoint["config"]["output_dir"] / "last.pt"
        history = load_checkpoint(last)["history"] if last.is_file() else checkpoint["history"]
        chain.insert(0, {"stage": checkpoint["stage"], "command": checkpoint["command"],
                         "best_epoch": checkpoint["best"]["epoch"],
                         "epoch": checkpoint["epoch"],  # the one the chain went on from (best.pt: the best one)
                         "val_dice": {r["epoch"]: round(r["val_dice"], 4) for r in history},
                         "train_seconds": round(sum(r["seconds"] for r in history))})
        start = checkpoint["config"].get("init_checkpoint")
        if not start:
            return chain
        checkpoint = load_checkpoint(REPO_ROOT / start)


def catalogue_entry(checkpoint: dict, default: bool) -> dict:
    recipe = checkpoint["recipe"]
    history = checkpoint["history"]
    return {
        "cases_seen": cases_seen(checkpoint["config"].get("split"), note=SEEN_NOTE, **checkpoint_seen(checkpoint)),
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
                "world_size": checkpoint["world_size"], "versions": checkpoint["versions"],
                "stages": stage_chain(checkpoint)},
        "command": invoked_command(),
        "versions": library_versions("torch", "brevitas", "onnx", "openvino"),
    }


def chosen_on(entry: dict, split: str, role: str) -> None:
    """Record in cases_seen that the whole `role` list of `split` chose this chain (over other chains or PTQ)."""
    seen = entry["cases_seen"]
    seen["selection"] = sorted(set(seen["selection"]) | split_cases(REPO_ROOT / split, role))
    seen["note"] += f"; the exported chain was chosen on the whole {role} list (docs/qat-paper.md)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a stage's best.pt")
    parser.add_argument("--name", required=True)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                        help="catalogue folder (default: the extension's shipped models)")
    parser.add_argument("--default", action="store_true", help="make this the catalogue's default model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--selected-on", choices=("validation",), default=None,
                        help="this chain was chosen over others on the whole list of its config's split (recorded "
                             "in cases_seen's selection)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model, checkpoint = model_from_checkpoint(args.checkpoint)
    args.models_dir.mkdir(parents=True, exist_ok=True)
    entry = catalogue_entry(checkpoint, args.default)
    if args.selected_on:
        if not checkpoint["config"].get("split"):
            parser.error("--selected-on needs a checkpoint whose config names a split file")
        chosen_on(entry, checkpoint["config"]["split"], args.selected_on)
    entry = export_to_catalogue(model, args.name, entry, args.models_dir)
    print(f"{args.name}: stage {checkpoint['stage']} epoch {checkpoint['epoch']} -> {args.models_dir / args.name}")
    for part, counts in entry["runtime_precisions"].items():
        print(f"  {part} runs: " + ", ".join(f"{k} x{v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
