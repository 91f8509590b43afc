"""Fine-tune LiteMedSAM's prompt encoder and mask decoder for clicks after the box (issue 17, item 2).

The image encoder is frozen, so each training image is encoded once (official preprocessing,
training.evaluation.reference) and its embedding cached (float16) with its label map resized to the 256 model space;
training then only runs the decoder, which makes CPU training feasible. Each step draws a batch of objects
(modality uniformly, then an image, then one of its objects; the box is the object's bounding box with
each side moved out by 0..max_jitter px) and is one of:
- a box-only step (probability box_only_prob): distillation, MSE between the student's and the frozen float
  model's low-res logits for the same box, so that box-only masks do not drift;
- a click step: K uniform in 1..max_clicks; SAM's iterative simulation places clicks one at a time at the
  interior of the largest error region of the current prediction (training.clicks.protocol.next_click, in the
  256 space), the first K-1 predictions without gradients; the last prediction gets Dice + BCE (or focal).
A validation pass (the click protocol in the 256 space on fixed boxes) runs every eval_every steps and at
step 0; best.pt keeps the best validation DSC_AUC. Checkpoints are plain dicts written atomically and
loaded with weights_only=True; a rerun resumes from last.pt.

    python -m training.clicks.finetune --out runs/clicks/small
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from qmedsam.atomic import atomic_write
from qmedsam.npz_io import read_npz_arrays

from training.clicks.protocol import area_under_curve, decode, next_click
from training.datasets.cases import discover, jitter_box, mask_bbox, nearest_resize
from training.evaluation.reference import OfficialPipeline, pad_to_side
from training.litemedsam import LiteMedSAM, load_litemedsam
from training.litemedsam.losses import dice_loss, focal_loss
from training.provenance import REPO_ROOT

FORMAT = "qmedsam-click-finetune/1"
CACHE_FORMAT = "qmedsam-click-embedding/1"


@dataclass
class Config:
    pool: str = "../pool"  # relative to the repository root, like ../shared/data
    split: str = "training/configs/split.yaml"
    images_per_modality: int = 6  # training images per modality (spread over the sorted list)
    val_images_per_modality: int = 1
    val_objects_per_image: int = 3  # validation objects per image (spread over its labels)
    batch: int = 4
    steps: int = 400
    max_minutes: float = 13.0  # the training loop stops here even if `steps` is not reached
    max_clicks: int = 5
    box_only_prob: float = 0.25
    mask_prompt_prob: float = 0.0  # chance that a click step also feeds the previous logits as mask prompt
    max_jitter: int = 5
    lr_prompt: float = 1e-3  # the point embeddings are tiny and were never tuned on medical images
    lr_decoder: float = 3e-5
    weight_decay: float = 0.01
    distill_weight: float = 1.0
    loss: str = "dice+bce"  # or dice+focal
    negative_weight: float = 1.0  # loss weight of objects whose last click is negative (the clicks that hurt)
    init: str = ""  # start from this checkpoint's prompt encoder + mask decoder (not its optimizer or history)
    eval_every: int = 60
    seed: int = 0
    threads: int = 2


# ------------------------------------------------------------------------------------- embedding cache


def cached_image(model: LiteMedSAM, image_path: Path, label_path: Path, cache: Path) -> dict:
    """{embedding (256, 64, 64) float16, labels (256, 256) int32 in the model space, resized_hw}."""
    target = cache / f"{image_path.stem}.pt"
    if target.is_file():
        return torch.load(target, map_location="cpu", weights_only=True)
    imgs = read_npz_arrays(image_path, ["imgs"], role="Image")["imgs"]
    gts = read_npz_arrays(label_path, ["gts"], role="Ground truth")["gts"]
    image_3c = imgs if imgs.ndim == 3 else np.repeat(imgs[:, :, None], 3, axis=-1)
    embedding, resized_hw = OfficialPipeline(model)._embed(image_3c)
    labels = pad_to_side(nearest_resize(gts, *resized_hw).astype(np.int32))
    entry = {"format": CACHE_FORMAT, "embedding": embedding[0].to(torch.float16),
             "labels": torch.from_numpy(labels), "resized_hw": list(resized_hw)}
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda temp: torch.save(entry, temp), overwrite=True)
    return entry


def spread(items: list, count: int) -> list:
    """`count` items evenly spaced over the list (all of them when it is short)."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def split_cases(config: Config) -> tuple[list, list]:
    """(train, validation) SourceFiles of the pool: split.yaml's lists, capped per modality."""
    import yaml
    files = [f for f in discover([REPO_ROOT / config.pool]) if f.kind == "2D"]
    split_path = REPO_ROOT / config.split
    lists = yaml.safe_load(split_path.read_text()) if split_path.is_file() else None
    chosen = []
    for part, cap in (("train", config.images_per_modality), ("validation", config.val_images_per_modality)):
        names = set(lists[part]) if lists else None
        part_files = [f for f in files if names is None or f.case in names]
        picked = []
        for modality in sorted({f.modality for f in part_files}):
            picked += spread([f for f in part_files if f.modality == modality], cap)
        chosen.append(picked)
    return chosen[0], chosen[1]


@dataclass(frozen=True)
class Image:
    case: str
    modality: str
    embedding: torch.Tensor  # (256, 64, 64) float16
    labels: np.ndarray  # (256, 256) int32
    resized_hw: tuple
    objects: tuple  # labels present in the model space


def load_images(model: LiteMedSAM, files: list, cache: Path) -> list[Image]:
    images = []
    for f in files:
        entry = cached_image(model, f.image_path, f.label_path, cache)
        labels = entry["labels"].numpy()
        objects = tuple(int(v) for v in np.unique(labels) if v != 0)
        if objects:
            images.append(Image(f.case, f.modality, entry["embedding"], labels, tuple(entry["resized_hw"]), objects))
    return images


# ---------------------------------------------------------------------------------------- simulation


def click_tensors(clicks: list[list]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object lists of Click (same length) -> points (N, K, 2), labels (N, K) in the model space."""
    points = torch.tensor([[[c.x, c.y] for c in obj] for obj in clicks], dtype=torch.float32)
    labels = torch.tensor([[1 if c.positive else 0 for c in obj] for obj in clicks], dtype=torch.int64)
    return points, labels


def add_clicks(clicks: list[list], logits: torch.Tensor, targets: np.ndarray, resized_hw: list) -> None:
    """One more click per object at its largest error (inside the resized image, not the padding).

    A perfect prediction repeats the last click (or clicks the target's interior first), so every object
    keeps the same number of clicks and the batch needs no padding.
    """
    predictions = (logits[:, 0] > 0).numpy()
    for obj, prediction, target, (h, w) in zip(clicks, predictions, targets, resized_hw):
        click = next_click(prediction[:h, :w], target[:h, :w])
        if click is None:
            click = obj[-1] if obj else next_click(np.zeros((h, w), bool), target[:h, :w])
        obj.append(click)


def simulate(model: LiteMedSAM, embeddings: torch.Tensor, boxes: torch.Tensor, targets: np.ndarray,
             resized_hw: list, count: int, mask_prompt: bool, start_logits: torch.Tensor) -> tuple:
    """Clicks (and the mask prompt) after `count` - 1 rounds without gradients, ready for the last round."""
    clicks: list[list] = [[] for _ in range(len(boxes))]
    logits = start_logits
    with torch.no_grad():
        for round_index in range(count):
            add_clicks(clicks, logits, targets, resized_hw)
            if round_index < count - 1:
                points, labels = click_tensors(clicks)
                logits, _ = decode(model, embeddings, boxes, points, labels, logits if mask_prompt else None)
    return clicks, (logits if mask_prompt else None)


# ------------------------------------------------------------------------------------------ training


class Sampler:
    """Objects drawn modality-uniformly, then image, then object; boxes jittered; fully seeded per step."""

    def __init__(self, images: list[Image], config: Config):
        self.images, self.config = images, config
        self.by_modality: dict = {}
        for index, image in enumerate(images):
            self.by_modality.setdefault(image.modality, []).append(index)
        self.modalities = sorted(self.by_modality)

    def batch(self, rng: np.random.Generator) -> tuple:
        chosen, boxes, targets = [], [], []
        for _ in range(self.config.batch):
            modality = self.modalities[rng.integers(len(self.modalities))]
            image = self.images[self.by_modality[modality][rng.integers(len(self.by_modality[modality]))]]
            target = image.labels == image.objects[rng.integers(len(image.objects))]
            box = jitter_box(mask_bbox(target), rng, self.config.max_jitter)
            chosen.append(image)
            boxes.append(box)
            targets.append(target)
        embeddings = torch.stack([image.embedding for image in chosen]).float()
        return (embeddings, torch.tensor(np.array(boxes), dtype=torch.float32), np.array(targets),
                [image.resized_hw for image in chosen])


def mask_losses(logits: torch.Tensor, targets: np.ndarray, kind: str,
                weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Dice + BCE (or focal) per object, weighted (all 1 by default) and averaged over the weights."""
    target = torch.from_numpy(targets[:, None].astype(np.float32))
    weights = [1.0] * len(logits) if weights is None else list(weights)
    total = logits.new_zeros(())
    for index, weight in enumerate(weights):
        one, truth = logits[index:index + 1], target[index:index + 1]
        second = focal_loss(one, truth) if kind == "dice+focal" else F.binary_cross_entropy_with_logits(one, truth)
        total = total + weight * (dice_loss(one, truth) + second)
    return total / sum(weights)


def trainable_groups(model: LiteMedSAM, config: Config) -> list[dict]:
    """Click and mask-prompt embeddings at lr_prompt; the box-corner and no-mask embeddings, which every
    box-only result depends on, move only as slowly as the decoder."""
    encoder = model.prompt_encoder
    box_path = [encoder.point_embeddings[2].weight, encoder.point_embeddings[3].weight, encoder.no_mask_embed.weight]
    click_path = [p for p in encoder.parameters() if all(p is not q for q in box_path)]
    return [{"params": click_path, "lr": config.lr_prompt},
            {"params": box_path + list(model.mask_decoder.parameters()), "lr": config.lr_decoder}]


def train_step(student: LiteMedSAM, teacher: LiteMedSAM, sampler: Sampler, optimizer, config: Config,
               step: int) -> dict:
    rng = np.random.default_rng((config.seed, step))
    embeddings, boxes, targets, resized_hw = sampler.batch(rng)
    optimizer.zero_grad()
    if rng.random() < config.box_only_prob:
        with torch.no_grad():
            teacher_logits, _ = teacher.decode(embeddings, boxes)
        logits, _ = student.decode(embeddings, boxes)
        loss = config.distill_weight * F.mse_loss(logits, teacher_logits)
        kind, count = "box", 0
    else:
        count = int(rng.integers(1, config.max_clicks + 1))
        mask_prompt = bool(rng.random() < config.mask_prompt_prob)
        with torch.no_grad():
            start, _ = student.decode(embeddings, boxes)
        clicks, previous = simulate(student, embeddings, boxes, targets, resized_hw, count, mask_prompt, start)
        points, labels = click_tensors(clicks)
        logits, _ = decode(student, embeddings, boxes, points, labels, previous)
        weights = [config.negative_weight if not obj[-1].positive else 1.0 for obj in clicks]
        loss = mask_losses(logits, targets, config.loss, weights)
        kind = "clicks"
    loss.backward()
    optimizer.step()
    return {"step": step, "kind": kind, "clicks": count, "loss": loss.item()}


@torch.no_grad()
def validate(model: LiteMedSAM, images: list[Image], config: Config) -> dict:
    """The click protocol in the 256 space on every validation object (tight boxes): DSC per round."""
    scores = []
    for image in images:
        for label in spread(list(image.objects), config.val_objects_per_image):
            target = image.labels == label
            box = torch.tensor(mask_bbox(target)[None], dtype=torch.float32)
            embedding = image.embedding[None].float()
            logits, _ = decode(model, embedding, box)
            clicks: list[list] = [[]]
            dscs = []
            h, w = image.resized_hw
            for round_index in range(config.max_clicks + 1):
                prediction = (logits[0, 0] > 0).numpy()[:h, :w]
                overlap = 2 * np.logical_and(prediction, target[:h, :w]).sum()
                dscs.append(float(overlap / max(prediction.sum() + target[:h, :w].sum(), 1)))
                if round_index == config.max_clicks:
                    break
                click = next_click(prediction, target[:h, :w])
                if click is not None:
                    clicks[0].append(click)
                    points, labels = click_tensors(clicks)
                    logits, _ = decode(model, embedding, box, points, labels)
            scores.append(dscs)
    mean = np.mean(scores, axis=0)
    return {"objects": len(scores), "dsc": [round(float(v), 4) for v in mean],
            "dsc_auc": round(float(np.mean([area_under_curve(s) for s in scores])), 4)}


# --------------------------------------------------------------------------------------- checkpoints


def save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temp: torch.save(dict(payload, format=FORMAT), temp), overwrite=True)


def read_checkpoint(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise SystemExit(f"{path} is damaged or not a checkpoint ({str(error).splitlines()[0]}); "
                         "delete it and rerun training/clicks/finetune.py") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise SystemExit(f"{path} is not a click fine-tuning checkpoint; expected one written by "
                         "training/clicks/finetune.py")
    return checkpoint


def load_finetuned(model: LiteMedSAM, path: Path) -> LiteMedSAM:
    """Loads a checkpoint's prompt encoder and mask decoder into the float LiteMedSAM (strictly)."""
    checkpoint = read_checkpoint(Path(path))
    model.prompt_encoder.load_state_dict(checkpoint["prompt_encoder"], strict=True)
    model.mask_decoder.load_state_dict(checkpoint["mask_decoder"], strict=True)
    return model


def payload(model: LiteMedSAM, optimizer, config: Config, step: int, history: list, best: float) -> dict:
    return {"prompt_encoder": model.prompt_encoder.state_dict(), "mask_decoder": model.mask_decoder.state_dict(),
            "optimizer": optimizer.state_dict(), "config": asdict(config), "step": step,
            "history": json.dumps(history), "best_dsc_auc": best}


def train(config: Config, out: Path) -> dict:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    teacher = load_litemedsam().eval()
    student = load_litemedsam().eval()  # eval: LiteMedSAM has no dropout/batch norm; keeps the teacher's maths
    for parameter in student.image_encoder.parameters():
        parameter.requires_grad_(False)
    started = time.time()
    train_files, val_files = split_cases(config)
    train_images = load_images(teacher, train_files, out.parent / "cache")
    val_images = load_images(teacher, val_files, out.parent / "cache")
    cache_seconds = time.time() - started
    print(f"cached {len(train_images)} training and {len(val_images)} validation images in {cache_seconds:.0f} s",
          flush=True)
    optimizer = torch.optim.AdamW(trainable_groups(student, config), weight_decay=config.weight_decay)
    step, history, best = 0, [], -math.inf
    if config.init:
        load_finetuned(student, REPO_ROOT / config.init)
        print(f"initialised from {config.init}", flush=True)
    last = out / "last.pt"
    if last.is_file():
        checkpoint = read_checkpoint(last)
        load_finetuned(student, last)
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group, fresh in zip(optimizer.param_groups, trainable_groups(student, config)):
            group["lr"] = fresh["lr"]  # this run's learning rates, so a resumed run may change them
        step, history, best = checkpoint["step"], json.loads(checkpoint["history"]), checkpoint["best_dsc_auc"]
        print(f"resumed at step {step}", flush=True)
    sampler = Sampler(train_images, config)
    loop_started = time.time()
    while True:
        if step % config.eval_every == 0 and not any(h.get("validation_step") == step for h in history):
            scores = validate(student, val_images, config)
            history.append({"validation_step": step, **scores})
            print(f"step {step} validation DSC {scores['dsc']} AUC {scores['dsc_auc']}", flush=True)
            if scores["dsc_auc"] > best:
                best = scores["dsc_auc"]
                save(out / "best.pt", payload(student, optimizer, config, step, history, best))
            save(last, payload(student, optimizer, config, step, history, best))
        out_of_time = (time.time() - loop_started) / 60 > config.max_minutes
        if step >= config.steps or out_of_time:
            break
        record = train_step(student, teacher, sampler, optimizer, config, step)
        step += 1
        if step % 10 == 0:
            print(json.dumps(record), flush=True)
        if step % config.eval_every and step % 25 == 0:
            save(last, payload(student, optimizer, config, step, history, best))
    save(last, payload(student, optimizer, config, step, history, best))
    summary = {"config": asdict(config), "train_images": len(train_images), "val_images": len(val_images),
               "train_objects": sum(len(i.objects) for i in train_images), "steps": step,
               "cache_seconds": round(cache_seconds, 1), "train_seconds": round(time.time() - loop_started, 1),
               "best_dsc_auc": best, "history": history}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints; keep it under runs/)")
    for name, value in asdict(Config()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    config = Config(**{name: getattr(args, name) for name in asdict(Config())})
    train(config, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
