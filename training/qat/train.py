"""Quantization-aware training of LiteMedSAM, one stage per command (QMedSAM §3.3, three stages).

    python -m training.qat.train --config training/configs/qat-stage1.yaml   # quantized encoder, decoder frozen float
    python -m training.qat.train --config training/configs/qat-stage2.yaml   # + quantized decoder, encoder frozen
    python -m training.qat.train --config training/configs/qat-stage3.yaml   # end to end
    torchrun --standalone --nproc_per_node 2 -m training.qat.train --config ...   # the same under DDP (gloo, CPU)

Each stage starts from the previous stage's best checkpoint, quantizes the parts its config adds and
initialises their activation scales from statistics of training images (Brevitas calibration), then
trains with SGD and the paper's warm-up + cosine schedule. Every epoch writes `last.pt` (a rerun of the
same command resumes from it) and a line of `log.jsonl`; the epoch with the best validation Dice becomes
`best.pt`, which `training.qat.export` turns into an OpenVINO model. Validation cases come from the split
file a config names (`split:`, training/configs/split.yaml; its test cases are never read) or else from
`training.datasets.cases.split_by_case`; `cases.json` in the output folder lists the cases the run saw, and
every checkpoint carries `cases_seen` (training/qat/seen.py: the calibration, training and selection cases of its
whole chain of stages). `--device cuda` trains and validates on a GPU (calibration stays on the CPU).

Two configurations: ours (qat-stage*.yaml) trains in eval mode, so BatchNorm statistics stay frozen (a batch
of 2 cannot estimate them; the INT8 recipe folds them anyway); the paper's (qat-paper-stage*.yaml, docs/
qat-paper.md) sets `train_mode: true` as the authors' code does (the whole student, frozen parts included).
Validation always runs in eval mode and also reports the image embedding's relative L2 error against the
float LiteMedSAM (`val_embedding_rel_l2`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.datasets.calibration_set import calibration_items, draw_cases, spread
from training.datasets.cases import (
    BoxPromptDataset,
    ModalityBalancedSampler,
    SliceIndex,
    collate,
    discover,
    split_by_case,
    split_cases,
)
from training.litemedsam import load_litemedsam
from training.litemedsam.losses import distillation_term, mask_iou, stage_losses
from training.provenance import invoked_command, library_versions
from training.qat.checkpoint import load_checkpoint, quantized_litemedsam, save_checkpoint
from training.qat.config import StageConfig, learning_rate, load_stage_config
from training.qat.seen import calibration_seen, merge, stage_seen
from training.quantization.ptq import load_recipe
from training.quantization.quantize import QuantRecipe, prepare_quantized


class StudentStep(nn.Module):
    """image embedding + mask for a batch; frozen parts run without autograd (one DDP-wrappable forward)."""

    def __init__(self, model: nn.Module, trainable_parts) -> None:
        super().__init__()
        self.model = model
        self.encoder_trains = "image_encoder" in trainable_parts

    def forward(self, images: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with nullcontext() if self.encoder_trains else torch.no_grad():
            embedding = self.model.embed(images)
        logits, iou = self.model.decode(embedding, boxes)
        return embedding, logits, iou


def _distributed() -> tuple[int, int]:
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _datasets(config: StageConfig):
    files = discover([config.path(root) for root in config.data])
    if config.cases is not None:
        files = [f for f in files if f.case in set(config.cases)]
    if not files:
        raise SystemExit(f"no labelled training files under {', '.join(config.data)}")
    if config.split:
        try:
            train_cases, val_cases = (split_cases(config.path(config.split), role) for role in ("train", "validation"))
        except ValueError as error:
            raise SystemExit(str(error)) from None
        train_files = [f for f in files if f.case in train_cases]
        val_files = [f for f in files if f.case in val_cases]
        if not train_files or not val_files:
            raise SystemExit(f"{config.split} names no train or no validation case under {', '.join(config.data)}")
    else:
        train_files, val_files = split_by_case(files, config.val_fraction, config.seed)
    train = BoxPromptDataset(train_files, augment=True, max_jitter=config.max_jitter, seed=config.seed)
    val = BoxPromptDataset(val_files or train_files, augment=False, seed=config.seed)
    return train, val, train_files, val_files


def _seen_before(config: StageConfig, train: BoxPromptDataset) -> dict:
    """What the init checkpoint's chain saw, plus this stage's calibration cases if it quantizes a new part."""
    inherited, done = {}, set()
    if config.init_checkpoint:
        start = load_checkpoint(config.path(config.init_checkpoint))
        inherited, done = checkpoint_seen(start), set(start["quantized_parts"])
    calibrates = any(part not in done for part in config.quantized_parts)
    if not calibrates:
        return inherited
    if config.calibration_per_modality is None:
        return merge(inherited, calibration_seen(train, config.calibration_samples))
    return merge(inherited, {"calibration": [case for cases in _drawn_calibration_cases(config, train).values()
                                             for case in cases]})


def checkpoint_seen(checkpoint: dict) -> dict:
    """A checkpoint's cases_seen; for one written before checkpoints carried it, replayed from its config
    (the same data, split, seeds and epochs give the same calibration images, draws and validation slices)."""
    if "cases_seen" in checkpoint:
        return checkpoint["cases_seen"]
    config = StageConfig(**checkpoint["config"])
    train, val, _, _ = _datasets(config)
    this_stage = stage_seen(train, config.samples_per_modality, config.seed, checkpoint["epoch"], val,
                            spread(len(val), config.val_samples))
    return merge(_seen_before(config, train), this_stage)


def _drawn_calibration_cases(config: StageConfig, train: BoxPromptDataset) -> dict:
    """data root -> the train cases PTQ's `--per-modality N --seed S` draw picks there (roots without any skipped)."""
    train_cases = sorted({f.case for f in train.files})
    drawn = {}
    for root in config.data:
        try:
            drawn[root] = draw_cases(config.path(root), train_cases, config.calibration_per_modality, config.seed)
        except ValueError:  # no train case under this root
            continue
    return drawn


def _calibration_batches(config: StageConfig, dataset: BoxPromptDataset):
    """(image, boxes) batches that set a newly quantized part's activation scales."""
    if config.calibration_per_modality is not None:
        for root, cases in _drawn_calibration_cases(config, dataset).items():
            for item in calibration_items(config.path(root), cases):
                yield torch.from_numpy(item.image), torch.from_numpy(item.boxes)
        return
    for index in spread(len(dataset), config.calibration_samples):
        sample = dataset[index]
        yield sample["image"][None], sample["box"][None]


def build_student(config: StageConfig, recipe: QuantRecipe, train: BoxPromptDataset, resume: dict | None):
    """The student of this stage: from last.pt when resuming, else the previous stage's best + new parts."""
    if resume is not None:
        model, _ = quantized_litemedsam(recipe, config.quantized_parts, resume["model"])
        return model, []
    if config.init_checkpoint:
        start = load_checkpoint(config.path(config.init_checkpoint))
        if QuantRecipe.from_dict(start["recipe"]) != QuantRecipe.from_dict(dict(recipe.to_dict(),
                                                                                parts=start["recipe"]["parts"])):
            raise SystemExit(f"{config.init_checkpoint} was trained with another recipe than {config.recipe}")
        model, _ = quantized_litemedsam(QuantRecipe.from_dict(start["recipe"]), start["quantized_parts"],
                                        start["model"])
        done = set(start["quantized_parts"])
    else:
        model, done = load_litemedsam().eval(), set()
    new_parts = [part for part in config.quantized_parts if part not in done]
    report = []
    for part in new_parts:
        # A newly quantized encoder is reparameterized first if the recipe says so (from the same batches);
        # a checkpoint's encoder already holds reparameterized values, which its state dict restores.
        part_recipe = QuantRecipe.from_dict(dict(recipe.to_dict(), parts=[part]))
        report += prepare_quantized(model, part_recipe, _calibration_batches(config, train),
                                    scope=getattr(model, part)).layers
    return model, report


def _freeze(model: nn.Module, trainable_parts) -> list[nn.Parameter]:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.split(".")[0] in trainable_parts)
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def validate(step: nn.Module, reference: nn.Module, dataset: BoxPromptDataset, indices, rank: int,
             world: int, reference_cache: dict | None = None, device: str = "cpu") -> dict:
    """Mean hard Dice and embedding error (MSE, relative L2) against the float model over this rank's share,
    summed across ranks; in eval mode whatever mode training uses. The float embeddings never change, so
    `reference_cache` (index -> embedding) keeps them from one epoch to the next."""
    reference_cache = {} if reference_cache is None else reference_cache
    step.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # dice sum, mse sum, relative L2 sum, count
    for index in indices[rank::world]:
        sample = dataset[index]
        images, boxes, target = (sample[key][None].to(device) for key in ("image", "box", "mask"))
        embedding, logits, _ = step(images, boxes)
        predicted = (logits > 0).float()
        dice = 2 * (predicted * target).sum() / (predicted.sum() + target.sum()).clamp(min=1)
        if index not in reference_cache:
            reference_cache[index] = reference.embed(images)
        float_embedding = reference_cache[index]
        mse = ((embedding - float_embedding) ** 2).mean()
        relative = (embedding - float_embedding).norm() / float_embedding.norm()
        totals += torch.tensor([float(dice), float(mse), float(relative), 1.0], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(totals)
    count = max(totals[3].item(), 1.0)
    return {"val_dice": totals[0].item() / count, "val_embedding_mse": totals[1].item() / count,
            "val_embedding_rel_l2": totals[2].item() / count, "val_samples": int(totals[3].item())}


def train_epoch(step: nn.Module, teacher, loader, optimizer, config: StageConfig, show: bool, epoch: int,
                device: str = "cpu") -> dict:
    sums, batches = {}, 0
    step.train(config.train_mode)  # the student only: the teacher stays in eval mode
    progress = tqdm(loader, desc=f"stage {config.stage} epoch {epoch}", disable=not show, leave=False)
    for batch in progress:
        images, boxes, target = (batch[key].to(device) for key in ("image", "box", "mask"))
        embedding, logits, iou = step(images, boxes)
        terms = stage_losses(logits, iou, target, config.loss, config.dice_form)
        if config.loss_weight("distill"):
            with torch.no_grad():
                teacher_embedding = teacher.embed(images)
                teacher_logits, teacher_iou = teacher.decode(teacher_embedding, boxes)
            terms["distill"] = distillation_term(embedding, teacher_embedding, teacher_logits, teacher_iou, target,
                                                 config.distill_weight)
        loss = sum(config.loss_weight(name) * value for name, value in terms.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(torch.nn.utils.clip_grad_norm_(
                [p for group in optimizer.param_groups for p in group["params"]], config.grad_clip))
        optimizer.step()
        batches += 1
        for name, value in dict(terms, loss=loss).items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        with torch.no_grad():
            sums["train_iou"] = sums.get("train_iou", 0.0) + float(mask_iou(logits, target).mean())
        progress.set_postfix(loss=f"{float(loss.detach()):.4f}")
    return {f"train_{k}" if not k.startswith("train_") else k: v / max(batches, 1) for k, v in sums.items()}


@dataclass
class _Stage:
    """Everything the epoch loop and the checkpoints of one QAT stage work with, built by `_set_up`."""

    config: StageConfig
    recipe: QuantRecipe
    rank: int
    world: int
    out: Path
    model: nn.Module
    step: nn.Module
    teacher: nn.Module  # the float LiteMedSAM: distillation teacher and validation reference
    optimizer: torch.optim.Optimizer
    train: BoxPromptDataset
    val: BoxPromptDataset
    train_files: list
    val_files: list
    sampler: ModalityBalancedSampler
    loader: DataLoader
    val_indices: object
    seen_before: dict  # cases the init chain saw, plus this stage's calibration (training/qat/seen.py)
    device: str = "cpu"
    first_epoch: int = 0
    best: dict = field(default_factory=lambda: {"epoch": -1, "val_dice": -1.0})
    history: list = field(default_factory=list)
    reference_embeddings: dict = field(default_factory=dict)  # validation index -> float embedding


def _resume_point(config: StageConfig, restart: bool, rank: int) -> dict | None:
    """last.pt of an interrupted run of this stage (None for a fresh start, whose old log is removed)."""
    out = config.path(config.output_dir)
    resume = load_checkpoint(out / "last.pt") if (out / "last.pt").exists() and not restart else None
    if resume is None and rank == 0:
        (out / "log.jsonl").unlink(missing_ok=True)  # a fresh start: the log describes this run only
    return resume


def _set_up(config: StageConfig, resume: dict | None, rank: int, world: int, device: str = "cpu") -> _Stage:
    """Data, the student (calibrated or restored), the frozen teacher, the optimizer and the loader."""
    recipe = load_recipe(config.path(config.recipe))
    train, val, train_files, val_files = _datasets(config)
    model, report = build_student(config, recipe, train, resume)  # calibrated on the CPU
    model.to(device)
    parameters = _freeze(model, config.trainable_parts)
    step: nn.Module = StudentStep(model, config.trainable_parts)
    if world > 1:
        step = nn.parallel.DistributedDataParallel(step)
    teacher = load_litemedsam().eval().requires_grad_(False).to(device)
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum)
    sampler = ModalityBalancedSampler(SliceIndex(train.files), config.samples_per_modality, config.seed,
                                      num_replicas=world, rank=rank)
    stage = _Stage(config, recipe, rank, world, config.path(config.output_dir), model, step, teacher, optimizer,
                   train, val, train_files, val_files, sampler,
                   DataLoader(train, batch_size=config.batch_size, sampler=sampler, collate_fn=collate),
                   spread(len(val), config.val_samples),
                   resume["seen_before"] if resume and "seen_before" in resume else _seen_before(config, train), device)
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        stage.first_epoch, stage.best, stage.history = resume["epoch"] + 1, resume["best"], resume["history"]
    if rank == 0:
        os.makedirs(stage.out, exist_ok=True)
        _record_cases(stage)
        print(f"stage {config.stage}: {len(train_files)} training / {len(val_files)} validation cases, "
              f"{sum(p.numel() for p in parameters):,} trainable parameters, world size {world}, "
              + (f"resuming at epoch {stage.first_epoch}" if resume else
                 f"{sum(r['quantized'] for r in report)} layers newly quantized"))
    return stage


def _record_cases(stage: _Stage) -> None:
    """cases.json beside the checkpoints: which cases trained (and calibrated) and which selected the epoch."""
    record = {"split": stage.config.split, "data": list(stage.config.data),
              "train": sorted({f.case for f in stage.train_files}),
              "validation": sorted({f.case for f in stage.val_files})}
    (stage.out / "cases.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _finish_epoch(stage: _Stage, epoch: int, record: dict) -> None:
    """Log the epoch, keep the best model so far (best.pt), and write last.pt to resume from."""
    config = stage.config
    stage.history.append(record)
    if record["val_dice"] > stage.best["val_dice"]:
        stage.best = {"epoch": epoch, "val_dice": record["val_dice"]}
    if stage.rank == 0:
        payload = {"stage": config.stage, "epoch": epoch, "recipe": stage.recipe.to_dict(),
                   "quantized_parts": list(config.quantized_parts), "model": stage.model.state_dict(),
                   "config": config.to_dict(), "best": stage.best, "history": stage.history,
                   "train_cases": [f.case for f in stage.train_files],
                   "val_cases": [f.case for f in stage.val_files],
                   "cases_seen": merge(stage.seen_before, stage_seen(stage.train, config.samples_per_modality,
                                                                     config.seed, epoch, stage.val, stage.val_indices)),
                   "seen_before": stage.seen_before, "device": stage.device,
                   "command": invoked_command(), "world_size": stage.world,
                   "versions": library_versions("torch", "brevitas")}
        if stage.best["epoch"] == epoch:
            save_checkpoint(stage.out / "best.pt", payload)
        save_checkpoint(stage.out / "last.pt", dict(payload, optimizer=stage.optimizer.state_dict()))
        with open(stage.out / "log.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
              flush=True)
    if stage.world > 1:
        dist.barrier()


def _validate(stage: _Stage) -> dict:
    return validate(stage.step, stage.teacher, stage.val, stage.val_indices, stage.rank, stage.world,
                    stage.reference_embeddings, stage.device)


def _train_epochs(stage: _Stage) -> None:
    """Epoch -1 (the calibrated, untrained start, which training has to beat to be kept) on a fresh start,
    then every remaining epoch: learning rate, one pass over the balanced sample, validation, checkpoint."""
    config = stage.config
    if stage.first_epoch == 0 and not stage.history:
        started = time.perf_counter()
        _finish_epoch(stage, -1, {"epoch": -1, "lr": 0.0, **_validate(stage),
                                  "seconds": round(time.perf_counter() - started, 1)})
    for epoch in range(stage.first_epoch, config.epochs):
        started = time.perf_counter()
        lr = learning_rate(config, epoch)
        for group in stage.optimizer.param_groups:
            group["lr"] = lr
        stage.sampler.set_epoch(epoch)
        stage.train.set_epoch(epoch)
        record = {"epoch": epoch, "lr": lr, **train_epoch(stage.step, stage.teacher, stage.loader, stage.optimizer,
                                                          config, stage.rank == 0, epoch, stage.device)}
        record.update(_validate(stage))
        record["seconds"] = round(time.perf_counter() - started, 1)
        _finish_epoch(stage, epoch, record)


def run(config: StageConfig, restart: bool = False, device: str = "cpu") -> dict:
    """One stage: set up (or resume), train its epochs with checkpoints; returns the best epoch and its Dice."""
    rank, world = _distributed()
    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(config.seed)
    resume = _resume_point(config, restart, rank)
    if resume is not None and resume["epoch"] + 1 >= config.epochs:
        if rank == 0:
            print(f"stage {config.stage}: already complete ({config.epochs} epochs) in {config.output_dir}")
        return resume["best"]
    started = time.perf_counter()
    stage = _set_up(config, resume, rank, world, device)
    _train_epochs(stage)
    if rank == 0:
        print(f"stage {config.stage}: best epoch {stage.best['epoch']} (validation Dice "
              f"{stage.best['val_dice']:.4f}) -> {config.output_dir}/best.pt; {time.perf_counter() - started:.0f} s")
    return stage.best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="training/configs/qat-stage{1,2,3}.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field (value read as YAML); repeatable")
    parser.add_argument("--restart", action="store_true", help="ignore last.pt and start the stage afresh")
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda (default: cpu)")
    args = parser.parse_args(argv)
    try:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise SystemExit(f"--device {args.device!r} is not a torch device; use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: this torch sees no CUDA GPU; leave --device out to use the CPU")
        run(load_stage_config(args.config, args.overrides), restart=args.restart, device=str(device))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
