"""Export the click decoder (fine-tuned prompt encoder + mask decoder) to OpenVINO IR, in its own catalogue record.

    python -m training.clicks.export_decoder --checkpoint runs/clicks/small-resumed/best.pt

Inputs `image_embedding` (1, 256, 64, 64), `boxes` (N, 4) and `points` (N, P, 2) in the 256 model space,
`point_labels` (N, P) as float (1 positive, 0 negative, -1 not-a-point padding); outputs `low_res_logits`
(N, 4, 256, 256) and `iou` (N, 4): all four mask tokens (token 0 is LiteMedSAM's single mask, as the box
decoder's; tokens 1-3 SAM's multimask outputs), which the engine's local click rule (qmedsam.click_rule)
picks from. N and P are dynamic (traced with 2 boxes of 2
points). No mask prompt: it made every measured curve worse (docs/clicks.md).

The image encoder is frozen in click fine-tuning, so the decoder reads the embedding of every LiteMedSAM
model of the catalogue; it lives in its own folder (litemedsam-clicks/) and its own `click_decoders` list
of models.json, so re-exporting a model never deletes it. Large weights are stored as fp16 (OpenVINO
computes in f32 after loading), which halves the file; Testing/test_clicks_engine.py measures what that
changes against the torch checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as opset
import torch
from torch import Tensor, nn

from training.catalogue_writer import MODELS_DIR, cases_seen
from training.clicks.protocol import decode_all_tokens, load_click_model
from training.litemedsam import LiteMedSAM
from training.litemedsam.weights import SOURCE_CHECKPOINT
from training.provenance import REPO_ROOT, invoked_command, library_versions, sha256_file
from training.quantization.compact_tables import compact_tables, replace_constant
from training.quantization.export_qcdq import store_large_float_constants_as_fp16

NAME = "litemedsam-clicks"
DECODER_FILE = "click_decoder.xml"
INPUTS = ("image_embedding", "boxes", "points", "point_labels")
OUTPUTS = ("low_res_logits", "iou")
MIN_FP16_ELEMENTS = 1 << 14  # weights of at least this many values go to fp16; biases and norms stay f32
# The 256 x 256 layers of the multimask tokens' hypernetworks (tokens 1-3, only read by the local click rule's
# choice for positive clicks): int8 per output row, to keep the repository's depth-1 clone under its 40 MiB.
INT8_WEIGHTS = tuple(f"self.model.mask_decoder.output_hypernetworks_mlps.{token}.layers.{layer}"
                     for token in (1, 2, 3) for layer in (0, 1))


class ClickDecoderForExport(nn.Module):
    """(embedding, boxes, points, point_labels) -> all four tokens' (low-res logits, iou), the protocol's own."""

    def __init__(self, model: LiteMedSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_embedding: Tensor, boxes: Tensor, points: Tensor, point_labels: Tensor):
        return decode_all_tokens(self.model, image_embedding, boxes, points, point_labels)


def convert(model: LiteMedSAM) -> ov.Model:
    example = (torch.rand(1, 256, 64, 64), torch.tensor([[10.0, 20, 120, 140], [30, 40, 200, 220]]),
               torch.tensor([[[50.0, 60], [70, 80]], [[90, 100], [110, 120]]]), torch.tensor([[1.0, 0], [1, -1]]))
    graph = ov.convert_model(ClickDecoderForExport(model), example_input=example,
                             input=[ov.PartialShape([1, 256, 64, 64]), ov.PartialShape([-1, 4]),
                                    ov.PartialShape([-1, -1, 2]), ov.PartialShape([-1, -1])])
    for ports, names in ((graph.inputs, INPUTS), (graph.outputs, OUTPUTS)):
        for port, name in zip(ports, names):
            port.get_tensor().set_names({name})
    return graph


def store_multimask_weights_as_int8(graph: ov.Model) -> int:
    """INT8_WEIGHTS as int8 * f32 scale per output row (symmetric, max |w| -> 127); returns the bytes saved
    against fp16 storage. Token 0, LiteMedSAM's own mask, keeps its fp16 weights."""
    saved = 0
    for op in graph.get_ops():
        if op.get_type_name() != "Constant" or not op.get_friendly_name().startswith(INT8_WEIGHTS):
            continue
        values = op.get_data().astype(np.float32)
        if values.shape != (256, 256):
            continue
        scale = np.maximum(np.abs(values).max(axis=1, keepdims=True), 1e-12) / 127
        quantized = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
        replace_constant(op, opset.multiply(opset.convert(opset.constant(quantized), ov.Type.f32),
                                            opset.constant(scale.astype(np.float32))).output(0))
        saved += values.size * 2 - values.size - scale.size * 4
    graph.validate_nodes_and_infer_types()
    return saved


def export(checkpoint: Path, folder: Path) -> dict:
    """Write the click decoder IR into `folder` (replaced, only this folder); returns what the export did."""
    torch.set_num_threads(2)
    model = load_click_model(checkpoint)
    # The box decoder's exact re-associations (mask_decoder.py), except the last-upscaling fold, which serves
    # a single token: all four are output here.
    model.mask_decoder.transformer.fold_projections(True)
    graph = convert(model)
    compacted = compact_tables(graph, model)
    int8_bytes_saved = store_multimask_weights_as_int8(graph)
    fp16_bytes_saved = store_large_float_constants_as_fp16(graph, MIN_FP16_ELEMENTS)
    with tempfile.TemporaryDirectory(prefix=f".build-{folder.name}-", dir=folder.parent) as scratch:
        built = Path(scratch) / folder.name
        built.mkdir()
        ov.save_model(graph, built / DECODER_FILE, compress_to_fp16=False)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(built, folder)
    return {"compacted_tables": compacted, "fp16_weights_min_elements": MIN_FP16_ELEMENTS,
            "fp16_bytes_saved": fp16_bytes_saved, "int8_weights": "tokens 1-3 hypernetwork 256 x 256 layers, per row",
            "int8_bytes_saved_against_fp16": int8_bytes_saved}


def checkpoint_cases_seen(path: Path) -> dict:
    """The pool cases the checkpoint was trained on and selected with (catalogue_writer.cases_seen)."""
    from training.clicks.finetune import Config, read_checkpoint, split_cases

    config = Config(**read_checkpoint(path)["config"])
    train, validation = split_cases(config)
    return cases_seen(config.split, training=[f.case for f in train], selection=[f.case for f in validation])


def checkpoint_record(path: Path) -> dict:
    """Where the weights came from: file, sha256, step, validation score, training configuration."""
    from training.clicks.finetune import read_checkpoint

    saved = read_checkpoint(path)
    resolved = path.resolve()
    relative = resolved.relative_to(REPO_ROOT).as_posix() if resolved.is_relative_to(REPO_ROOT) else path.name
    return {"file": relative, "sha256": sha256_file(path), "step": int(saved["step"]),
            "validation_dsc_auc": round(float(saved["best_dsc_auc"]), 4), "config": saved["config"]}


def record_click_decoder(entry: dict, models_dir: Path = MODELS_DIR) -> dict:
    """Add or replace `entry` (by name) in models.json's `click_decoders`, with its files' sha256 and sizes.

    The `models` list is left as it is; training.catalogue_writer.record_model likewise keeps this list.
    """
    folder = models_dir / entry["folder"]
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".xml", ".bin"))
    entry = dict(entry, sha256={name: sha256_file(folder / name) for name in files},
                 size={name: (folder / name).stat().st_size for name in files})
    path = models_dir / "models.json"
    catalogue = json.loads(path.read_text())
    others = [d for d in catalogue.get("click_decoders", []) if d["name"] != entry["name"]]
    catalogue["click_decoders"] = sorted(others + [entry], key=lambda d: d["name"])
    path.write_text(json.dumps(catalogue, indent=2) + "\n")
    return entry


TRAINING = {
    "commands": ["python -m training.clicks.finetune --out runs/clicks/small",
                 "python -m training.clicks.finetune --out runs/clicks/small --steps 1000 --max-minutes 30 "
                 "--lr-decoder 1e-4  (resumed from step 94; best.pt = step 120, copied to runs/clicks/small-resumed)"],
    "data": "the training pool (../pool): training/configs/split.yaml's train list for training and its validation "
            "list for selecting the checkpoint; no test-split case (every ../shared/data case is in the test split)",
    "frozen": "image_encoder (so every LiteMedSAM model's embedding fits this decoder)",
    "trained": ["prompt_encoder", "mask_decoder"],
}

# Held-out measurement of this checkpoint in torch (docs/measurements/clicks-finetuned.json, box+clicks).
TORCH_MEASURED = {"data": "../shared/data, 12 2D cases (test split), 155 objects",
                  "file": "docs/measurements/clicks-finetuned.json",
                  "dsc_modality_mean_per_click": [0.726, 0.667, 0.654, 0.648, 0.640, 0.628],
                  "dsc_auc_modality_mean": 3.286}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "runs/clicks/small-resumed/best.pt",
                        help="click fine-tuning checkpoint (default: runs/clicks/small-resumed/best.pt)")
    parser.add_argument("--name", default=NAME, help=f"catalogue name and folder (default: {NAME})")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                        help="catalogue folder to write into (default: the shipped Resources/Models)")
    args = parser.parse_args(argv)
    export_info = export(args.checkpoint, args.models_dir / args.name)
    entry = record_click_decoder({
        "name": args.name,
        "folder": args.name,
        "decoder": DECODER_FILE,
        "description": "Click decoder: LiteMedSAM's prompt encoder + mask decoder fine-tuned for positive/negative "
                       "clicks after the box (issue 17); reads the embedding of any LiteMedSAM model",
        "inputs": {"image_embedding": "(1, 256, 64, 64) f32", "boxes": "(N, 4) f32, 256 space",
                   "points": "(N, P, 2) f32, x, y in 256 space", "point_labels": "(N, P) f32, 1 / 0 / -1 padding"},
        "outputs": {"low_res_logits": "(N, 4, 256, 256) f32, token 0 first", "iou": "(N, 4) f32"},
        "max_clicks_trained": 5,
        "base_checkpoint": SOURCE_CHECKPOINT,
        "source_checkpoint": checkpoint_record(args.checkpoint),
        "cases_seen": checkpoint_cases_seen(args.checkpoint),
        "training": TRAINING,
        "measured_torch": TORCH_MEASURED,
        "export": export_info,
        "command": invoked_command(),
        "versions": library_versions("torch", "openvino"),
    }, models_dir=args.models_dir)
    print(f"wrote {args.models_dir / args.name}: " + ", ".join(f"{n} {s} B" for n, s in entry["size"].items()))


if __name__ == "__main__":
    main()
