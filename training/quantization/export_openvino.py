"""Export float LiteMedSAM to OpenVINO IR (encoder + prompt encoder/decoder) into the model catalogue.

    python -m training.quantization.export_openvino                      # litemedsam-fp32, recorded in models.json
    python -m training.quantization.export_openvino --fp16 --name litemedsam-fp16-weights
    python -m training.quantization.export_openvino --local              # build the catalogued litemedsam-fp32 files
                                                            # here, checked against models.json (untouched)

The export is byte-deterministic (same torch/openvino: the same sha256 on every run), which is why the
FP32 reference need not be stored in git: tests, bench and training build it locally with --local, once.

The decoder takes the image embedding (1, 256, 64, 64) and N boxes (N, 4) in 256 space, with N dynamic;
it is traced with 2 example boxes so the box axis stays dynamic, with the decoder's per-box work
re-associated exactly (MaskDecoder.fold_for_inference in training/litemedsam/mask_decoder.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import openvino as ov
import torch

from training.catalogue_writer import MODELS_DIR, record_model
from training.litemedsam import load_litemedsam
from training.litemedsam.model import DecoderForExport, EncoderForExport
from training.litemedsam.weights import SOURCE_CHECKPOINT
from training.provenance import invoked_command, library_versions, sha256_file
from training.quantization.compact_tables import compact_tables


def convert(model) -> tuple[ov.Model, ov.Model]:
    encoder = ov.convert_model(EncoderForExport(model), example_input=torch.rand(1, 3, 256, 256),
                               input=[ov.PartialShape([1, 3, 256, 256])])
    example = (torch.rand(1, 256, 64, 64), torch.tensor([[10.0, 20, 120, 140], [30, 40, 200, 220]]))
    decoder = ov.convert_model(DecoderForExport(model), example_input=example,
                               input=[ov.PartialShape([1, 256, 64, 64]), ov.PartialShape([-1, 4])])
    for graph, inputs, outputs in ((encoder, ["image"], ["image_embedding"]),
                                   (decoder, ["image_embedding", "boxes"], ["low_res_logits", "iou"])):
        for port, name in zip(graph.inputs, inputs):
            port.get_tensor().set_names({name})
        for port, name in zip(graph.outputs, outputs):
            port.get_tensor().set_names({name})
    return encoder, decoder


def export(folder: Path, fp16: bool = False) -> list:
    """Write encoder/decoder IR of float LiteMedSAM into `folder` (replaced); returns the compacted tables."""
    torch.set_num_threads(2)
    model = load_litemedsam()
    # Exact re-associations of the decoder's per-box work (mask_decoder.py: Attention, _upscaled_masks).
    model.mask_decoder.fold_for_inference(True)
    encoder, decoder = convert(model)
    compacted = compact_tables(encoder, model) + compact_tables(decoder, model)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ov.save_model(encoder, folder / "encoder.xml", compress_to_fp16=fp16)
    ov.save_model(decoder, folder / "decoder.xml", compress_to_fp16=fp16)
    return compacted


def _matches(folder: Path, sha256: dict) -> bool:
    return all((folder / name).is_file() and sha256_file(folder / name) == digest for name, digest in sha256.items())


def build_local(name: str = "litemedsam-fp32", models_dir: Path = MODELS_DIR) -> Path:
    """The catalogued float model's files in models_dir, exported here unless already there; models.json untouched.

    The export goes to a scratch folder beside the target and is moved in only when every file has the
    catalogue's sha256, so a reader never sees a half-built model and a mismatch (other torch/openvino
    versions) is an error rather than a silently different reference.
    """
    record = next((m for m in json.loads((models_dir / "models.json").read_text())["models"] if m["name"] == name),
                  None)
    if record is None or record.get("precision") not in ("fp32", "fp16-weights"):
        raise SystemExit(f"{name!r} is not a float model of {models_dir / 'models.json'}")
    target = models_dir / record["folder"]
    if _matches(target, record["sha256"]):
        return target
    with tempfile.TemporaryDirectory(prefix=f".build-{name}-", dir=models_dir) as scratch:
        built = Path(scratch) / record["folder"]
        export(built, fp16=record["precision"] == "fp16-weights")
        if not _matches(built, record["sha256"]):
            found = {f: sha256_file(built / f)[:12] for f in sorted(record["sha256"])}
            raise SystemExit(f"the local export of {name} differs from models.json ({found}); recorded versions "
                             f"{record.get('versions')}: install requirements/lock.txt")
        if not _matches(target, record["sha256"]):  # another process may have finished first
            shutil.rmtree(target, ignore_errors=True)
            os.replace(built, target)
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="litemedsam-fp32")
    parser.add_argument("--fp16", action="store_true", help="store weights as fp16 (compute stays fp32)")
    parser.add_argument("--default", action="store_true", help="make this the catalogue's default model")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                        help="catalogue folder to write into (default: the shipped Resources/Models)")
    parser.add_argument("--local", action="store_true",
                        help="build the catalogued model's files if missing, verified by sha256; models.json untouched")
    args = parser.parse_args(argv)

    if args.local:
        print(f"{build_local(args.name, args.models_dir)}: matches models.json")
        return
    folder = args.models_dir / args.name
    compacted = export(folder, fp16=args.fp16)
    entry = record_model({
        "name": args.name,
        "folder": args.name,
        "precision": "fp16-weights" if args.fp16 else "fp32",
        "calibration": "none",
        "default": args.default,
        "encoder": "encoder.xml",
        "decoder": "decoder.xml",
        "description": "LiteMedSAM (Apache-2.0, bowang-lab/MedSAM LiteMedSAM branch), float, "
                       + ("fp16 weight storage" if args.fp16 else "fp32 weights"),
        "source_checkpoint": SOURCE_CHECKPOINT,
        "compacted_tables": compacted,
        "command": invoked_command(),
        "versions": library_versions("torch", "openvino"),
    }, models_dir=args.models_dir)
    print(f"wrote {folder}: " + ", ".join(entry["sha256"]))


if __name__ == "__main__":
    main()
