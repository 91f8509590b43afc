"""Box, then clicks: the CVPR 2025 interactive protocol with the float torch LiteMedSAM (issue 17).

Per object: the box alone (round 0), then up to 5 rounds. Each round places one click at the interior point
(largest Euclidean distance to the region's border, the image border counting as border) of the largest
connected error region (FN ∪ FP, 8-connected); it is positive where the ground truth holds the object (a
missed region) and negative where it does not (a false region), and the object is re-segmented with its
box, all its clicks so far and, optionally, the previous low-resolution logits as SAM's dense mask prompt.
An object with no error left gets no click and keeps its mask. Each object is decoded on its own, as the
official pipeline decodes each box, so round 0 is exactly training.evaluation.reference.OfficialPipeline's mask.

Option --variants box+clicks+local: the local click rule (qmedsam.click_rule, the engine's own), a click
changes only the part of the mask around it, with SAM's multimask tokens offered to positive clicks (docs/clicks.md).

Scores: DSC and NSD (qmedsam.metrics, 1 mm pixels for 2D) of each object's mask after each round, and
DSC_AUC / NSD_AUC, the trapezoid area under the score-over-click-index curve for clicks 0..5 (unit steps,
so 5 is the maximum), as the challenge's area under the curve; mean per modality and over all objects.

    python -m training.clicks.protocol --out docs/measurements/clicks-float.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from qmedsam.click_rule import clicks_satisfied, refine_locally  # noqa: F401  (the rule, written once)
from qmedsam.metrics import NSD_MIN_DSC, dice, normalized_surface_dice
from qmedsam.npz_io import read_npz_arrays
from qmedsam.preprocess import points_to_model_space
from scipy import ndimage
from torch import Tensor

from training.datasets.cases import DEFAULT_DATA, DEFAULT_DATA_IN_REPO, discover
from training.evaluation.reference import OfficialPipeline, scale_box
from training.litemedsam import LiteMedSAM, load_litemedsam

MAX_ROUNDS = 5
NOT_A_POINT = -1  # SAM's label of a padding point: its embedding is not_a_point_embed, no position
EIGHT_CONNECTED = np.ones((3, 3), bool)
# name -> (previous logits as mask prompt, click rule); the first two are the issue's, the third docs/clicks.md's
VARIANTS = {"box+clicks": (False, "plain"), "box+clicks+mask": (True, "plain"), "box+clicks+local": (False, "local"),
            "box+clicks+local+brush": (False, "local+brush")}


class Click(NamedTuple):
    """A click as qmedsam.click_rule reads it: (x, y, positive)."""

    x: int  # column in image pixels
    y: int  # row in image pixels
    positive: bool


# ------------------------------------------------------------------------------------------ click placement


def next_click(prediction: np.ndarray, truth: np.ndarray) -> Optional[Click]:
    """The click at the interior of the largest error region of `prediction` against `truth`, or None.

    Ties are broken deterministically: the first largest region in row-major order, and among its points
    farthest from the border the first in row-major order.
    """
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    regions, count = ndimage.label(prediction ^ truth, structure=EIGHT_CONNECTED)
    if count == 0:
        return None
    sizes = np.bincount(regions.ravel())
    sizes[0] = 0
    largest = np.pad(regions == int(np.argmax(sizes)), 1)  # zero frame: the image border is a border
    distance = ndimage.distance_transform_edt(largest)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return Click(int(x), int(y), bool(truth[y, x]))


# ----------------------------------------------------------------------------------- prompts and decoding


def clicks_to_model_space(clicks: Sequence[Click], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Image-pixel clicks -> (P, 2) x, y in the 256 model space (the engine's rule, qmedsam.preprocess) and (P,)
    labels 1 (positive) / 0 (negative)."""
    points = points_to_model_space(np.array([[c.x, c.y] for c in clicks], np.float64).reshape(-1, 2), height, width)
    labels = np.array([1 if c.positive else 0 for c in clicks], np.int64)
    return points, labels


def embed_points(model: LiteMedSAM, points: Tensor, labels: Tensor) -> Tensor:
    """SAM's point tokens: (N, P, 2) model-space x, y and (N, P) labels 1/0/-1 -> (N, P, 256).

    Position encoding of the pixel centre plus the positive or negative type embedding; a not-a-point
    (-1) token is not_a_point_embed alone, with no position.
    """
    encoder = model.prompt_encoder
    height, width = encoder.input_image_size
    positions = encoder.pe_layer((points + 0.5) / points.new_tensor([width, height]))
    is_pad = (labels == NOT_A_POINT)[..., None]
    types = torch.where((labels == 1)[..., None], encoder.point_embeddings[1].weight,
                        encoder.point_embeddings[0].weight)
    return torch.where(is_pad, encoder.not_a_point_embed.weight, positions + types)


def decode(model: LiteMedSAM, embedding: Tensor, boxes: Tensor, points: Optional[Tensor] = None,
           labels: Optional[Tensor] = None, mask_logits: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Low-res logits (N, 1, 256, 256) and IoU (N, 1) for boxes (N, 4) plus optional clicks and mask prompt.

    Without clicks and mask this is model.decode itself, so box-only results stay bit-identical. Tokens are
    ordered as SAM orders them: points, then the two box corners.
    """
    if points is None and mask_logits is None:
        return model.decode(embedding, boxes)
    encoder = model.prompt_encoder
    sparse = encoder.embed_boxes(boxes)
    if points is not None and points.shape[1] > 0:
        sparse = torch.cat([embed_points(model, points, labels), sparse], dim=1)
    dense = encoder.dense_embedding() if mask_logits is None else encoder.mask_downscaling(mask_logits)
    return model.mask_decoder(embedding, encoder.dense_positional_encoding(), sparse, dense)


def decode_all_tokens(model: LiteMedSAM, embedding: Tensor, boxes: Tensor, points: Tensor,
                      labels: Tensor) -> tuple[Tensor, Tensor]:
    """Low-res logits (N, 4, 256, 256) and IoU (N, 4) of all four mask tokens for boxes plus clicks.

    Token 0 is LiteMedSAM's single mask (what `decode` returns); tokens 1-3 are SAM's multimask outputs, unused
    by LiteMedSAM's box-only tuning, which still respond to positive clicks (docs/clicks.md).
    """
    encoder, decoder = model.prompt_encoder, model.mask_decoder
    if decoder.fold_last_upscaling:
        raise ValueError("decode_all_tokens needs the unfolded decoder (fold_for_inference(False))")
    sparse = torch.cat([embed_points(model, points, labels), encoder.embed_boxes(boxes)], dim=1)
    outputs = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([outputs.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    tokens_out, image_tokens = decoder.transformer(embedding + encoder.dense_embedding(),
                                                   encoder.dense_positional_encoding(), tokens)
    hyper_in = torch.stack([mlp(tokens_out[:, 1 + index]) for index, mlp in
                            enumerate(decoder.output_hypernetworks_mlps)], dim=1)
    logits = decoder._upscaled_masks(image_tokens, hyper_in, *embedding.shape[-2:])
    return logits, decoder.iou_prediction_head(tokens_out[:, 0])


def logits_to_masks(logits: Tensor, resized_hw: tuple, original_hw: tuple) -> np.ndarray:
    """The official post-processing: crop the padding, bilinear resize to the image, sigmoid > 0.5."""
    logits = logits[..., : resized_hw[0], : resized_hw[1]]
    logits = F.interpolate(logits, size=original_hw, mode="bilinear", align_corners=False)
    return (torch.sigmoid(logits)[:, 0] > 0.5).numpy()


# ---------------------------------------------------------------------------------------------- protocol


def click_rounds(segment: Callable[[list], np.ndarray], truth: Optional[np.ndarray],
                 rounds: int = MAX_ROUNDS) -> Iterator[tuple[np.ndarray, list]]:
    """One object's (mask, clicks so far) after the box (round 0) and after each of `rounds` clicks, where
    `segment(clicks)` is the object's mask for its box and those clicks (any model: torch or the engine)."""
    mask = segment([])
    clicks: list = []
    yield mask, list(clicks)
    for _ in range(rounds):
        click = next_click(mask, truth)
        if click is not None:  # nothing left to fix: the object keeps its mask
            clicks.append(click)
            mask = segment(clicks)
        yield mask, list(clicks)


@torch.inference_mode()
def interactive_masks(model: LiteMedSAM, embedding: Tensor, resized_hw: tuple, box: np.ndarray,
                      truth: Optional[np.ndarray], original_hw: tuple, rounds: int = MAX_ROUNDS,
                      mask_prompt: bool = False, rule: str = "plain",
                      box_model: Optional[LiteMedSAM] = None) -> Iterator[tuple[np.ndarray, list]]:
    """One object's (mask, clicks so far) with the torch model; the box alone is model.decode itself (or
    box_model.decode: the engine's split, the original decoder for the box and the click decoder for clicks).
    rule "local": each click through `refine_locally` (no mask prompt); "local+brush": with its brush (the engine's
    default) for clicks the decoder does not follow."""
    height, width = original_hw
    box_256 = torch.as_tensor(scale_box(box, height, width)[None])
    previous = []  # the last low-res logits, for the mask prompt
    masks = []  # the masks so far, for the local rule

    def segment(clicks: list) -> np.ndarray:
        if not clicks:
            logits, _ = decode(box_model or model, embedding, box_256)
        elif rule in ("local", "local+brush"):
            points, labels = clicks_to_model_space(clicks, height, width)
            logits, iou = decode_all_tokens(model, embedding, box_256, torch.from_numpy(points[None]),
                                            torch.from_numpy(labels[None]))
            candidates = logits_to_masks(logits[0][:, None], resized_hw, original_hw)
            masks.append(refine_locally(masks[-1], candidates, iou[0].numpy(), clicks, brush=rule == "local+brush"))
            return masks[-1]
        else:
            points, labels = clicks_to_model_space(clicks, height, width)
            logits, _ = decode(model, embedding, box_256, torch.from_numpy(points[None]),
                               torch.from_numpy(labels[None]), previous[-1] if mask_prompt else None)
        previous.append(logits)
        masks.append(logits_to_masks(logits, resized_hw, original_hw)[0])
        return masks[-1]

    yield from click_rounds(segment, truth, rounds)


def area_under_curve(scores: Sequence[float]) -> float:
    """Trapezoid area of the scores over click index 0, 1, ... (unit steps)."""
    scores = np.asarray(scores, float)
    return float(((scores[1:] + scores[:-1]) / 2).sum())


def object_scores(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    dsc = dice(mask, truth)
    nsd = normalized_surface_dice(mask, truth, (1.0, 1.0)) if dsc > NSD_MIN_DSC else 0.0
    return dsc, nsd


def read_case_2d(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) image, (N, 4) boxes and (H, W) label map of a 2D case."""
    image = read_npz_arrays(image_path, ["imgs", "boxes"], role="Image")
    gts = read_npz_arrays(label_path, ["gts"], role="Ground truth")["gts"]
    imgs, boxes = image["imgs"], np.asarray(image["boxes"])
    return (imgs if imgs.ndim == 3 else np.repeat(imgs[:, :, None], 3, axis=-1)), boxes, gts


ObjectRounds = Callable[[np.ndarray, np.ndarray], Iterator[tuple[np.ndarray, list]]]  # (box, truth) -> rounds


def score_objects(case: str, boxes: np.ndarray, gts: np.ndarray, object_rounds: ObjectRounds) -> list[dict]:
    """Per-object DSC/NSD after each round; objects are the gts labels that have a box."""
    present = set(np.unique(gts).tolist())
    results = []
    for label in range(1, len(boxes) + 1):
        if label not in present:
            continue
        truth = gts == label
        dscs, nsds, click_log = [], [], []
        for mask, clicks in object_rounds(boxes[label - 1], truth):
            dsc, nsd = object_scores(mask, truth)
            dscs.append(dsc)
            nsds.append(nsd)
            click_log = clicks
        results.append({"case": case, "label": label, "dsc": dscs, "nsd": nsds,
                        "clicks": [[c.x, c.y, int(c.positive)] for c in click_log]})
    return results


def evaluate_case(pipeline: OfficialPipeline, image_path: Path, label_path: Path, rounds: int,
                  mask_prompt: bool, rule: str = "plain", box_model: Optional[LiteMedSAM] = None) -> list[dict]:
    """Per-object DSC/NSD after each round for one 2D case, with the torch model."""
    image_3c, boxes, gts = read_case_2d(image_path, label_path)
    embedding, resized_hw = pipeline._embed(image_3c)
    return score_objects(image_path.stem, boxes, gts, lambda box, truth: interactive_masks(
        pipeline.model, embedding, resized_hw, box, truth, gts.shape, rounds, mask_prompt, rule, box_model))


def summarise(objects: list[dict], modality_of: dict) -> dict:
    """Mean DSC/NSD per round and mean DSC_AUC/NSD_AUC, per modality and over all objects."""
    groups = {"all": objects}
    for obj in objects:
        groups.setdefault(modality_of[obj["case"]], []).append(obj)

    def means(group: list[dict]) -> dict:
        dsc = np.mean([o["dsc"] for o in group], axis=0)
        nsd = np.mean([o["nsd"] for o in group], axis=0)
        return {"objects": len(group), "dsc": [round(float(v), 4) for v in dsc],
                "nsd": [round(float(v), 4) for v in nsd],
                "dsc_auc": round(float(np.mean([area_under_curve(o["dsc"]) for o in group])), 4),
                "nsd_auc": round(float(np.mean([area_under_curve(o["nsd"]) for o in group])), 4)}
    summary = {name: means(group) for name, group in sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0]))}
    # One case can hold most objects (125 nuclei in the Microscope case): the mean of the modality means
    # weighs every modality once.
    per_modality = [scores for name, scores in summary.items() if name != "all"]
    summary["modality mean"] = {key: [round(float(v), 4) for v in np.mean([m[key] for m in per_modality], axis=0)]
                                if key in ("dsc", "nsd") else round(float(np.mean([m[key] for m in per_modality])), 4)
                                for key in ("dsc", "nsd", "dsc_auc", "nsd_auc")}
    summary["modality mean"]["objects"] = len(objects)
    return summary


def run(data: Path, cases: Optional[set], rounds: int, model: LiteMedSAM,
        names: Sequence[str] = ("box+clicks", "box+clicks+mask"), box_model: Optional[LiteMedSAM] = None) -> dict:
    files = [f for f in discover([data]) if f.kind == "2D" and (cases is None or f.case in cases)]
    if not files:
        raise SystemExit(f"no 2D cases under {data}" + (" from the given case list" if cases else ""))
    pipeline = OfficialPipeline(model)
    modality_of = {f.case: f.modality for f in files}
    variants = {}
    for name in names:
        mask_prompt, rule = VARIANTS[name]
        objects = []
        for f in files:
            objects += evaluate_case(pipeline, f.image_path, f.label_path, rounds, mask_prompt, rule, box_model)
        variants[name] = {"summary": summarise(objects, modality_of), "objects": objects}
    return variants


def results_json(result: dict) -> str:
    """Indented JSON with one line per object, scores rounded to 4 decimals (a few tens of kB, not hundreds)."""
    variants = result["variants"]
    objects = {name: [json.dumps({**o, "dsc": [round(v, 4) for v in o["dsc"]], "nsd": [round(v, 4) for v in o["nsd"]]})
                      for o in variant["objects"]] for name, variant in variants.items()}
    skeleton = {**result, "variants": {name: {**variant, "objects": f"@{name}@"} for name, variant in variants.items()}}
    text = json.dumps(skeleton, indent=1)
    for name, lines in objects.items():
        text = text.replace(json.dumps(f"@{name}@"), "[\n  " + ",\n  ".join(lines) + "\n ]")
    return text + "\n"


def write_results(path: Path, result: dict) -> None:
    """`results_json` to `path`, gzip-compressed when it ends in .gz (the pool runs' per-object files: hundreds of
    kB of JSON each, against the repository's size budget, Testing/test_repository_size.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = results_json(result).encode()
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0) if path.suffix == ".gz" else data)


def load_click_model(checkpoint: Optional[Path]) -> LiteMedSAM:
    """The float LiteMedSAM, with a click fine-tuning checkpoint's prompt encoder + mask decoder if given."""
    model = load_litemedsam()
    if checkpoint is not None:
        from training.clicks.finetune import load_finetuned  # only needed for fine-tuned models
        load_finetuned(model, checkpoint)
    return model.eval()


def case_list(split: Optional[Path], part: Optional[str]) -> Optional[set]:
    if split is None:
        return None
    import yaml
    return set(yaml.safe_load(split.read_text())[part])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"evaluation layout (default "
                        f"{DEFAULT_DATA_IN_REPO})")
    parser.add_argument("--split", type=Path, help="split.yaml: evaluate only the cases of --part")
    parser.add_argument("--part", default="test", help="which list of --split (default test)")
    parser.add_argument("--checkpoint", type=Path, help="click fine-tuning checkpoint (training/clicks/finetune.py)")
    parser.add_argument("--box-from-original", action="store_true",
                        help="box-only round from the original decoder, clicks from --checkpoint's (as the engine)")
    parser.add_argument("--rounds", type=int, default=MAX_ROUNDS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="box+clicks,box+clicks+mask",
                        help=f"comma-separated, of {', '.join(VARIANTS)} (default the first two)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    names = args.variants.split(",")
    if any(name not in VARIANTS for name in names):
        parser.error(f"--variants {args.variants}: expected names of {', '.join(VARIANTS)}")
    box_model = load_click_model(None) if args.box_from_original else None
    variants = run(args.data, case_list(args.split, args.part), args.rounds, load_click_model(args.checkpoint), names,
                   box_model)
    result = {
        "command": "python -m training.clicks.protocol " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": "float torch LiteMedSAM" + (f" + {args.checkpoint.name}" if args.checkpoint else "")
                 + (" (box-only round: the original decoder)" if args.box_from_original else ""),
        "protocol": "per object: box, then up to 5 clicks at the interior (max EDT, image border = border) of "
                    "the largest 8-connected FN∪FP region, positive iff the ground truth holds the object there; "
                    "re-segmented with box + all clicks (+ previous low-res logits as mask prompt in "
                    "'box+clicks+mask'; through refine_locally in 'box+clicks+local', with its brush in "
                    "'box+clicks+local+brush'); each object decoded on its own; no click once an object has no error",
        "auc": "trapezoid area of the per-object score over click index 0..5 (unit steps, maximum 5), averaged",
        "nsd": "qmedsam.metrics, 2 mm tolerance at 1 mm pixels, 0 where DSC <= 0.2",
        "seconds": round(time.time() - started, 1),
        "variants": variants,
    }
    write_results(args.out, result)
    for name, variant in variants.items():
        for group, scores in variant["summary"].items():
            print(f"{name:16s} {group:12s} n={scores['objects']:3d} DSC {' '.join(f'{v:.3f}' for v in scores['dsc'])}"
                  f"  AUC {scores['dsc_auc']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
