"""OpenVINO's own post-training INT8 (NNCF) of the shipped FP32 IR: the baseline a Brevitas model has to beat.

    python -m training.quantization.nncf_ptq      # litemedsam-nncf-int8 from the split's train cases in ../pool
    python -m training.quantization.nncf_ptq --per-modality 3 --seed 0     # the cases the default PTQ model drew
    python -m training.quantization.nncf_ptq --name litemedsam-nncf-int8-perf --preset performance
    python -m training.quantization.nncf_ptq --exclude 2DBox_US_busuc        # hold more cases out of calibration

Calibration set: the `train` cases of the split file (training/configs/split.yaml) found in the data folder
(the training pool), never a validation or test case, or with --per-modality N a seeded draw of N of them per
modality (training.datasets.calibration_set.draw_cases, as training.quantization.ptq draws); built with the
engine's own preprocessing
(qmedsam.preprocess, the official LiteMedSAM semantics):
- encoder items: every 2D image; for a 3D case, a few slices inside each box's z range (the middle slice the
  box prompts and slices spread evenly to both ends of the range; 3 per box: z_min, middle, z_max), each once;
- decoder items: (FP32 embedding of that image or slice, its boxes in 256 space). All boxes of a 2D image, or
  every box whose z range covers the slice, up to --max-boxes (evenly spread when a case has more), so items
  carry several boxes where the case has them and the box axis is calibrated at the sizes the engine uses.

Both parts go through `nncf.quantize(..., model_type=TRANSFORMER)`: an earlier measurement on this project
found the default model type zeroing some organs, TRANSFORMER did not. The decoder keeps its dynamic box axis
(checked with 1 and 16 boxes after saving). Weights are saved as they come out (compress_to_fp16=False).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import openvino as ov

from training.catalogue_writer import MODELS_DIR, cases_seen, record_model
from training.datasets.calibration_set import (
    MAX_BOXES,
    SLICES_PER_BOX,
    CalibrationItem,
    calibration_items,
    draw_cases,
)
from training.datasets.cases import SPLIT_FILE_IN_REPO, add_split_arguments, split_cases
from training.provenance import REPO_ROOT, invoked_command, library_versions
from training.quantization.module_names import module_name_matches

FP32_NAME = "litemedsam-fp32"
DEFAULT_SPLIT = REPO_ROOT / SPLIT_FILE_IN_REPO  # calibration reads its train list unless told otherwise
DEFAULT_POOL = REPO_ROOT.parent / "pool"  # the training pool beside the repository (training/datasets/build_pool.py)
PARTS = ("encoder", "decoder")
TORCH_PART = {"encoder": "image_encoder", "decoder": "mask_decoder"}  # the torch module each IR part comes from
PRESETS = ("mixed", "performance")  # mixed is what NNCF itself picks for TRANSFORMER models


def _compile(model: ov.Model | Path, threads: int = 2) -> ov.CompiledModel:
    # f32 arithmetic, as the engine's default: calibration must not depend on the CPU having bf16.
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                   "INFERENCE_NUM_THREADS": threads})


def add_embeddings(items: list[CalibrationItem], encoder_xml: Path, threads: int = 2) -> None:
    """Fill in each item's image embedding from the FP32 encoder (the decoder's calibration input)."""
    request = _compile(encoder_xml, threads).create_infer_request()
    for item in items:
        item.embedding = np.array(request.infer({"image": item.image})["image_embedding"], copy=True)


def part_inputs(part: str, items: Sequence[CalibrationItem]) -> list[dict]:
    if part == "encoder":
        return [{"image": item.image} for item in items]
    return [{"image_embedding": item.embedding, "boxes": item.boxes} for item in items]


def float_node_names(model: ov.Model, keep_float: Sequence[str]) -> list[str]:
    """The IR's MatMul / Convolution nodes of the torch modules named by `keep_float` (module-name prefixes, as
    in a Brevitas recipe's keep_float): the OpenVINO export names each node `__module.model.<module>/aten::...`."""
    names = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() in ("MatMul", "Convolution")]
    found = {prefix: [n for n in names if module_name_matches(n.removeprefix("__module.model.").split("/")[0], prefix)]
             for prefix in keep_float}
    missing = [prefix for prefix, nodes in found.items() if not nodes]
    if missing:
        raise SystemExit(f"--keep-float names no MatMul or Convolution of this part: {missing}")
    return sorted({n for nodes in found.values() for n in nodes})


def quantize_part(model: ov.Model, inputs: list[dict], subset_size: Optional[int] = None,
                  preset: str = "mixed", keep_float: Sequence[str] = ()) -> ov.Model:
    import nncf  # imported here: it is slow to import and logs on import

    ignored = nncf.IgnoredScope(names=float_node_names(model, keep_float)) if keep_float else None
    return nncf.quantize(model, nncf.Dataset(inputs), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=min(subset_size or len(inputs), len(inputs)),
                         preset=nncf.QuantizationPreset(preset), ignored_scope=ignored)


def fake_quantize_count(model: ov.Model) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def check_dynamic_boxes(decoder: ov.Model | Path, embedding: np.ndarray, counts: Sequence[int] = (1, 16)) -> None:
    """The decoder still takes any number of boxes: run it with each count and check the output shapes."""
    model = ov.Core().read_model(decoder) if isinstance(decoder, Path) else decoder
    box_shape = model.input("boxes").get_partial_shape()
    if not box_shape[0].is_dynamic:
        raise RuntimeError(f"decoder box axis is no longer dynamic: {box_shape}")
    request = _compile(model).create_infer_request()
    rng = np.random.default_rng(0)
    for count in counts:
        corners = np.sort(rng.uniform(0, 255, (count, 2, 2)), axis=1)  # (x0, y0) <= (x1, y1)
        boxes = corners.reshape(count, 4).astype(np.float32)
        result = request.infer({"image_embedding": embedding, "boxes": boxes})
        shapes = (tuple(result["low_res_logits"].shape), tuple(result["iou"].shape))
        if shapes != ((count, 1, 256, 256), (count, 1)):
            raise RuntimeError(f"decoder with {count} boxes gave shapes {shapes}")


def _size(folder: Path, part: str) -> int:
    return sum((folder / f"{part}{suffix}").stat().st_size for suffix in (".xml", ".bin"))


def calibration_summary(items: Sequence[CalibrationItem], subset_size: Optional[int], max_boxes: int,
                        slices_per_box: int, data_dir: Path) -> dict:
    per_case: dict = {}
    for item in items:
        entry = per_case.setdefault(item.case, {"items": 0, "boxes": 0})
        entry["items"] += 1
        entry["boxes"] += len(item.boxes)
        if item.slice_index is not None:
            entry.setdefault("slices", []).append(item.slice_index)
    try:
        data = Path(data_dir).resolve().relative_to(REPO_ROOT.parent).as_posix()
        data = f"../{data}"  # relative to the repo root, never a path of this machine
    except ValueError:
        data = Path(data_dir).name
    used = min(subset_size or len(items), len(items))
    return {"data": data, "cases": per_case, "items": len(items), "subset_size": used,
            "boxes": sum(len(item.boxes) for item in items), "max_boxes_per_item": max_boxes,
            "slices_per_3d_box": slices_per_box,
            "note": "encoder: preprocessed images/slices; decoder: FP32 embedding + its boxes in 256 space"}


def build(name: str = "litemedsam-nncf-int8", data_dir: Path = DEFAULT_POOL, models_dir: Path = MODELS_DIR,
          source_dir: Optional[Path] = None, parts: Sequence[str] = PARTS, subset_size: Optional[int] = None,
          preset: str = "mixed", max_boxes: int = MAX_BOXES, slices_per_box: int = SLICES_PER_BOX,
          cases: Optional[Iterable[str]] = None, exclude: Sequence[str] = (), max_items: Optional[int] = None,
          split: Optional[Path] = None, part: str = "train", per_modality: Optional[int] = None, seed: int = 0,
          threads: int = 2, keep_float: Sequence[str] = (), log=print) -> dict:
    """Quantize `parts` of the FP32 IR into models_dir/name (other parts copied as FP32) and record it.

    `split`: calibrate on that split file's `part` list only (train or validation; intersected with `cases`);
    `per_modality`: then draw that many of those cases per modality with `seed`; `keep_float`: module-name
    prefixes left float (NNCF's ignored scope), each applied to the part it belongs to.
    """
    start = time.perf_counter()
    if source_dir is None:  # not kept in git: exported from the pinned checkpoint, sha256-checked, once
        from training.quantization.export_openvino import build_local

        source_dir = build_local(FP32_NAME)
    source_dir = Path(source_dir)
    if split is not None:
        listed = split_cases(split, part)
        cases = listed if cases is None else listed & set(cases)
    if per_modality is not None:
        cases = draw_cases(data_dir, cases, per_modality, seed)
    items = calibration_items(data_dir, cases, exclude, max_boxes, slices_per_box)
    if max_items is not None:
        items = items[:max_items]
    add_embeddings(items, source_dir / "encoder.xml", threads)
    log(f"calibration: {len(items)} items ({sum(len(i.boxes) for i in items)} boxes) from "
        f"{len({i.case for i in items})} cases, {time.perf_counter() - start:.1f} s")

    folder = Path(models_dir) / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    summary = {"name": name, "parts": {}}
    core = ov.Core()
    for part in PARTS:
        part_start = time.perf_counter()
        model = core.read_model(source_dir / f"{part}.xml")
        if part in parts:
            own = [p for p in keep_float if p.startswith(TORCH_PART[part])]
            model = quantize_part(model, part_inputs(part, items), subset_size, preset, own)
        ov.save_model(model, folder / f"{part}.xml", compress_to_fp16=False)
        summary["parts"][part] = {"quantized": part in parts, "fake_quantize": fake_quantize_count(model),
                                  "bytes": _size(folder, part), "fp32_bytes": _size(source_dir, part),
                                  "seconds": round(time.perf_counter() - part_start, 1)}
        log(f"{part}: {summary['parts'][part]}")
    check_dynamic_boxes(folder / "decoder.xml", items[0].embedding)

    quantized = [p for p in PARTS if p in parts]
    entry = record_model({
        "name": name,
        "folder": name,
        "precision": "int8",
        "calibration": "nncf-ptq",
        "default": False,
        "encoder": "encoder.xml",
        "decoder": "decoder.xml",
        "description": f"LiteMedSAM, OpenVINO NNCF post-training INT8 of {FP32_NAME} "
                       f"({' + '.join(quantized)} quantized, model_type=transformer, preset={preset}); "
                       "baseline for the Brevitas models",
        "source_model": FP32_NAME,
        "quantized_parts": quantized,
        "nncf": {"model_type": "transformer", "preset": preset, "fast_bias_correction": True,
                 "keep_float": list(keep_float)},
        "calibration_data": dict(calibration_summary(items, subset_size, max_boxes, slices_per_box, data_dir),
                                 **({"per_modality": per_modality, "seed": seed} if per_modality else {})),
        "cases_seen": cases_seen(split, calibration=[item.case for item in items]),
        "command": invoked_command(),
        "versions": library_versions("nncf", "openvino"),
    }, models_dir=Path(models_dir))
    summary["sha256"] = entry["sha256"]
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary


def print_summary(summary: dict) -> None:
    print(f"\n{summary['name']}: done in {summary['seconds']:.0f} s")
    print("| part | quantized | FakeQuantize nodes | size (MB) | FP32 size (MB) | ratio | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for part, info in summary["parts"].items():
        print(f"| {part} | {'yes' if info['quantized'] else 'no'} | {info['fake_quantize']} | "
              f"{info['bytes'] / 1e6:.1f} | {info['fp32_bytes'] / 1e6:.1f} | "
              f"{info['bytes'] / info['fp32_bytes']:.2f} | {info['seconds']:.0f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="litemedsam-nncf-int8")
    parser.add_argument("--data", type=Path, default=DEFAULT_POOL, help="folder holding imgs/*.npz (the pool)")
    add_split_arguments(parser)
    parser.add_argument("--per-modality", type=int, default=None, metavar="N",
                        help="calibrate on N cases per modality drawn with --seed (default: every case)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --per-modality draw")
    parser.set_defaults(split=DEFAULT_SPLIT)  # never the whole pool by default: it holds the test cases too
    parser.add_argument("--subset-size", type=int, default=None,
                        help="calibration items NNCF uses (default: all of them)")
    parser.add_argument("--preset", choices=PRESETS, default="mixed",
                        help="mixed: asymmetric activations (NNCF's choice for transformers); performance: symmetric")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to quantize")
    parser.add_argument("--max-boxes", type=int, default=MAX_BOXES, help="boxes per decoder calibration item")
    parser.add_argument("--slices-per-box", type=int, default=SLICES_PER_BOX, help="3D slices per box")
    parser.add_argument("--exclude", nargs="*", default=[], help="leave cases whose name contains this out")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="catalogue folder to write into")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-float", nargs="*", default=[], metavar="MODULE",
                        help="torch module-name prefixes left float (an ignored scope), e.g. the default recipe's "
                             "mask_decoder.transformer.final_attn_token_to_image.av_matmul")
    args = parser.parse_args(argv)
    summary = build(args.name, args.data, args.models_dir, parts=args.parts, subset_size=args.subset_size,
                    preset=args.preset, max_boxes=args.max_boxes, slices_per_box=args.slices_per_box,
                    exclude=args.exclude, split=args.split, part=args.part, per_modality=args.per_modality,
                    seed=args.seed, threads=args.threads, keep_float=args.keep_float)
    print_summary(summary)
    print(json.dumps(summary["sha256"], indent=2))


if __name__ == "__main__":
    main()
