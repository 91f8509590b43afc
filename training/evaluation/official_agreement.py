"""How far the engine's masks agree with the official pipeline's (torch + OpenCV), and why they differ.

    python -m training.evaluation.official_agreement --json docs/measurements/official-agreement.json

Per case: mask agreement (mean Dice over labels) between the engine and `training.evaluation.reference`, and each one's
DSC against the ground truth. For a 3D case that does not agree exactly, per object: the first slice, in
propagation order (middle slice up, then down), where the two masks differ, the box each pipeline used
there (from the previous slice's mask), and what differs on that slice: the model inputs, and the low-res
logits of the two runtimes for the same box (the pixels whose sign flips, and how close to 0 they were).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from qmedsam.engine import Segmenter, box_z_range, middle_slice, segment_case
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import load_npz_case, read_npz_arrays
from qmedsam.preprocess import (
    box_from_mask_in_model_space,
    boxes_to_model_space,
    resized_shape,
    to_model_input,
)

from training.datasets.cases import DEFAULT_DATA
from training.evaluation.reference import OfficialPipeline, box_from_previous_mask, pad_to_side, resize_longest_side
from training.provenance import invoked_command, library_versions


def _propagation_order(box: np.ndarray, depth: int) -> list[tuple[int, int | None]]:
    """(slice, previous slice whose mask gives its box) in the official order; None on the middle slice."""
    z_low, z_high = box_z_range(box, depth)
    z_middle = middle_slice(z_low, z_high)
    order = [(z, None if z == z_middle else z - 1) for z in range(z_middle, z_high + 1)]
    return order + [(z, z + 1) for z in range(z_middle - 1, z_low - 1, -1)]


def _boxes_at(ours: np.ndarray, theirs: np.ndarray, label: int, previous: int | None, middle_box: np.ndarray):
    """The 256-space box each pipeline derives for a slice from its own previous-slice mask."""
    if previous is None:
        return middle_box, middle_box
    ours_box = box_from_mask_in_model_space(ours[previous] == label, label)
    official_small = pad_to_side(resize_longest_side((theirs[previous] == label).astype(np.uint8) * np.uint8(label)))
    theirs_box = box_from_previous_mask(official_small) if official_small.max() > 0 else None
    return (middle_box if ours_box is None else ours_box), (middle_box if theirs_box is None else theirs_box)


@torch.inference_mode()
def _slice_difference(segmenter: Segmenter, reference: OfficialPipeline, image: np.ndarray,
                      box_256: np.ndarray) -> dict:
    """Same slice, same box: where the engine's and torch's inputs and low-res logits differ."""
    image_3c = np.repeat(image[:, :, None], 3, axis=-1)
    ours_input = to_model_input(image)[0]
    small = resize_longest_side(image_3c)
    small = (small - small.min()) / np.clip(small.max() - small.min(), 1e-8, None)
    theirs_input = torch.from_numpy(pad_to_side(small)).float().permute(2, 0, 1)[None].numpy()
    ours_logits = segmenter.decode_logits(segmenter.encode(image), box_256[None].astype(np.float32))[0][0]
    embedding, _ = reference._embed(image_3c)
    theirs_logits, _ = reference.model.decode(embedding, torch.as_tensor(box_256[None], dtype=torch.float32))
    theirs_logits = theirs_logits[0, 0].numpy()
    height, width = resized_shape(*image.shape)
    ours_logits, theirs_logits = ours_logits[:height, :width], theirs_logits[:height, :width]
    flipped = (ours_logits > 0) != (theirs_logits > 0)
    return {"model_input_max_abs_difference": float(np.abs(ours_input - theirs_input).max()),
            "logits_max_abs_difference": float(np.abs(ours_logits - theirs_logits).max()),
            "low_res_pixels_flipped": int(flipped.sum()),
            "flipped_pixels_max_abs_logit": float(np.abs(theirs_logits[flipped]).max(initial=0.0))}


def first_divergence(segmenter: Segmenter, reference: OfficialPipeline, volume: np.ndarray, boxes: np.ndarray,
                     ours: np.ndarray, theirs: np.ndarray) -> list[dict]:
    """Per object whose masks differ: the first differing slice in propagation order and what differs there."""
    found = []
    height, width = volume.shape[1:]
    for index, box in enumerate(boxes):
        label = index + 1
        order = _propagation_order(box, volume.shape[0])
        differing = [(z, previous) for z, previous in order if not np.array_equal(ours[z] == label,
                                                                                 theirs[z] == label)]
        if not differing:
            continue
        z, previous = differing[0]
        middle_box = boxes_to_model_space(box[[0, 1, 3, 4]], height, width)
        ours_box, theirs_box = _boxes_at(ours, theirs, label, previous, middle_box)
        entry = {"label": label, "slices": len(order), "slices_differing": len(differing),
                 "first_differing_slice": int(z), "step_from_middle": order.index((z, previous)),
                 "previous_slice": previous, "box_engine": ours_box.tolist(), "box_official": theirs_box.tolist(),
                 "pixels_differing_on_that_slice": int(((ours[z] == label) != (theirs[z] == label)).sum())}
        if np.array_equal(ours_box, theirs_box):
            entry.update(_slice_difference(segmenter, reference, volume[z], np.asarray(ours_box, np.float32)))
        found.append(entry)
    return found


def measure(data: Path, cases: list[str], model: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    segmenter = Segmenter(model, threads=threads)
    reference = OfficialPipeline(share_embeddings=True)  # same masks as the baseline, fewer encoder runs
    rows = []
    for name in cases:
        case = load_npz_case(data / "imgs" / f"{name}.npz")
        truth = read_npz_arrays(data / "gts" / f"{name}.npz", ("gts",), role="Ground truth",
                                needs="a ground truth holds 'gts'")["gts"]
        ours = segment_case(segmenter, case.kind, case.image, case.boxes)
        theirs = reference.segment_case(case.kind, case.image, case.boxes)
        row = {"case": name, "kind": case.kind, "shape": list(case.image.shape), "boxes": len(case.boxes),
               "agreement": label_agreement(ours, theirs), "identical": bool(np.array_equal(ours, theirs)),
               "dsc_engine": label_agreement(ours, truth), "dsc_official": label_agreement(theirs, truth)}
        if case.kind == "3D" and not row["identical"]:
            row["divergence"] = first_divergence(segmenter, reference, case.image, case.boxes, ours, theirs)
        rows.append(row)
        print(f"  {name}: agreement {row['agreement']:.4f}{'' if row['identical'] else ' (not identical)'}",
              file=sys.stderr)
    agreements = [row["agreement"] for row in rows]
    return {"model": segmenter.entry.name, "threads": threads, "cases": rows,
            "mean_agreement": float(np.mean(agreements)), "min_agreement": float(np.min(agreements)),
            "identical_cases": sum(row["identical"] for row in rows)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with imgs/ and gts/ (default: ../shared/data)")
    parser.add_argument("--cases", nargs="*", default=None, help="case names (default: every imgs/*.npz)")
    parser.add_argument("--model", default="litemedsam-fp32", help="engine model (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    cases = args.cases or sorted(p.stem for p in (args.data / "imgs").glob("*.npz"))
    report = measure(args.data, cases, args.model, args.threads)
    report = {"command": invoked_command(), "versions": library_versions("openvino", "torch", "opencv-python-headless",
                                                                          "numpy"), **report}
    print(f"mean agreement {report['mean_agreement']:.4f}, min {report['min_agreement']:.4f}, "
          f"{report['identical_cases']}/{len(cases)} cases identical")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
