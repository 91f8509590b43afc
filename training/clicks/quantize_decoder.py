"""INT8 click decoder by NNCF post-training quantization (an experiment: the shipped click decoder stays fp16).

    python -m training.clicks.quantize_decoder --out runs/clicks-engine/int8-models

Calibration inputs come from the click fine-tuning cache (runs/clicks/cache: float embeddings and 256-space
label maps of the pool's train split only, never test): per image up to 3 objects, box = the object's bounding
box, then 1..5 clicks placed one at a time by the protocol's next_click on the click decoder's own
predictions, so point tokens of every count are calibrated. Quantized with training.quantization.nncf_ptq's
settings (model_type=transformer, preset=mixed) and written with its own click_decoders record into --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import torch
import yaml
from qmedsam.catalogue import find_click_decoder

from training.clicks.export_decoder import DECODER_FILE, record_click_decoder
from training.clicks.finetune import CACHE_FORMAT
from training.clicks.protocol import MAX_ROUNDS, next_click
from training.datasets.cases import mask_bbox
from training.provenance import REPO_ROOT, invoked_command, library_versions
from training.quantization.nncf_ptq import quantize_part


def calibration_inputs(cache: Path, train_cases: set, decoder: ov.CompiledModel, per_image: int = 3) -> list[dict]:
    inputs = []
    for path in sorted(cache.glob("*.pt")):
        if path.stem not in train_cases:
            continue
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if entry.get("format") != CACHE_FORMAT:
            continue
        embedding = entry["embedding"].float().numpy()[None]
        labels = entry["labels"].numpy()
        objects = [v for v in np.unique(labels) if v > 0]
        for label in objects[:: max(1, len(objects) // per_image)][:per_image]:
            truth = labels == label
            box = mask_bbox(truth).astype(np.float32)[None]
            prediction, clicks = np.zeros_like(truth), []
            for _ in range(MAX_ROUNDS):
                click = next_click(prediction, truth)
                if click is None:
                    break
                clicks.append(click)
                sample = {"image_embedding": embedding, "boxes": box,
                          "points": np.array([[[c.x, c.y] for c in clicks]], np.float32),
                          "point_labels": np.array([[float(c.positive) for c in clicks]], np.float32)}
                inputs.append(sample)
                prediction = decoder(sample)[0][0, 0] > 0
    return inputs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "runs/clicks/cache")
    parser.add_argument("--split", type=Path, default=REPO_ROOT / "training/configs/split.yaml")
    parser.add_argument("--out", type=Path, required=True, help="catalogue folder for the INT8 click decoder")
    parser.add_argument("--name", default="litemedsam-clicks-int8")
    args = parser.parse_args(argv)
    source = find_click_decoder()
    xml, weights = source.model_pair("decoder")
    core = ov.Core()
    model = core.read_model(model=xml, weights=weights)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 2})
    train = set(yaml.safe_load(args.split.read_text())["train"])
    inputs = calibration_inputs(args.cache, train, compiled)
    quantized = quantize_part(model, inputs)
    folder = args.out / args.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ov.save_model(quantized, folder / DECODER_FILE, compress_to_fp16=False)
    catalogue = args.out / "models.json"
    if not catalogue.exists():
        catalogue.write_text(json.dumps({"models": []}) + "\n")
    entry = record_click_decoder(dict(source.record, name=args.name, folder=args.name, command=invoked_command(),
                                      quantized={"tool": "nncf", "model_type": "transformer", "preset": "mixed",
                                                 "calibration_inputs": len(inputs),
                                                 "calibration_data": "runs/clicks/cache, train split only"},
                                      versions=library_versions("nncf", "openvino")), models_dir=args.out)
    print(f"{len(inputs)} calibration inputs; wrote {folder}: {entry['size']}")


if __name__ == "__main__":
    main()
