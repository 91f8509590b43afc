"""Export float LiteMedSAM to OpenVINO IR (encoder + prompt encoder/decoder) into the model catalogue.

    python -m training.export_openvino                      # the shipped litemedsam-fp32
    python -m training.export_openvino --fp16 --name litemedsam-fp16-weights

The decoder takes the image embedding (1, 256, 64, 64) and N boxes (N, 4) in 256 space, with N dynamic;
it is traced with 2 example boxes so the box axis stays dynamic, with the decoder's per-box work
re-associated exactly (MaskDecoder.fold_for_inference in training/litemedsam/mask_decoder.py).
"""

from __future__ import annotations

import argparse
import shutil

import openvino as ov
import torch

from training.catalogue_writer import MODELS_DIR, invoked_command, library_versions, record_model
from training.compact_tables import compact_tables
from training.litemedsam import load_litemedsam
from training.litemedsam.model import DecoderForExport, EncoderForExport
from training.litemedsam.weights import SOURCE_CHECKPOINT


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="litemedsam-fp32")
    parser.add_argument("--fp16", action="store_true", help="store weights as fp16 (compute stays fp32)")
    parser.add_argument("--default", action="store_true", help="make this the catalogue's default model")
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    model = load_litemedsam()
    # Exact re-associations of the decoder's per-box work (mask_decoder.py: Attention, _upscaled_masks).
    model.mask_decoder.fold_for_inference(True)
    encoder, decoder = convert(model)
    compacted = compact_tables(encoder, model) + compact_tables(decoder, model)
    folder = MODELS_DIR / args.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ov.save_model(encoder, folder / "encoder.xml", compress_to_fp16=args.fp16)
    ov.save_model(decoder, folder / "decoder.xml", compress_to_fp16=args.fp16)
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
    })
    print(f"wrote {folder.relative_to(MODELS_DIR.parents[2])}: " + ", ".join(entry["sha256"]))


if __name__ == "__main__":
    main()
