"""Quantization-aware training of LiteMedSAM, one stage per command (QMedSAM §3.3, three stages).

    python -m training.qat --config training/configs/qat-stage1.yaml   # quantized encoder, decoder frozen float
    python -m training.qat --config training/configs/qat-stage2.yaml   # + quantized decoder, encoder frozen
    python -m training.qat --config training/configs/qat-stage3.yaml   # end to end
    torchrun --standalone --nproc_per_node 2 -m training.qat --config ...   # the same under DDP (gloo, CPU)

Each stage starts from the previous stage's best checkpoint, quantizes the parts its config adds and
initialises their activation scales from statistics of training images (Brevitas calibration), then
trains with SGD and the paper's warm-up + cosine schedule. Every epoch writes `last.pt` (a rerun of the
same command resumes from it) and a line of `log.jsonl`; the epoch with the best validation Dice (cases
held out by `training.data.split_by_case`) becomes `best.pt`, which `training.qat_export` turns into an
OpenVINO model. The student trains in eval mode: BatchNorm statistics stay frozen (a batch of 2 cannot
estimate them; the INT8 recipe folds them anyway) and drop-path is off, as suits fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.calibration_set import spread
from training.catalogue_writer import invoked_command, library_versions
from training.data import BoxPromptDataset, ModalityBalancedSampler, SliceIndex, collate, discover, split_by_case
from training.litemedsam import load_litemedsam
from training.losses import distillation_loss, mask_iou, stage_losses
from training.ptq import load_recipe
from training.qat_checkpoint import load_checkpoint, quantized_litemedsam, save_checkpoint
from training.qat_config import StageConfig, learning_rate, load_stage_config
from training.quantize import QuantRecipe, prepare_quantized


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
    train_files, val_files = split_by_case(files, config.val_fraction, config.seed)
    train = BoxPromptDataset(train_files, augment=True, max_jitter=config.max_jitter, seed=config.seed)
    val = BoxPromptDataset(val_files or train_files, augment=False, seed=config.seed)
    return train, val, train_files, val_files


def _calibration_batches(dataset: BoxPromptDataset, count: int):
    for index in spread(len(dataset), count):
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
        report += prepare_quantized(model, part_recipe, _calibration_batches(train, config.calibration_samples),
                                    scope=getattr(model, part)).layers
    return model, report


def _freeze(model: nn.Module, trainable_parts) -> list[nn.Parameter]:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.split(".")[0] in trainable_parts)
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def validate(step: nn.Module, teacher: nn.Module | None, dataset: BoxPromptDataset, indices, rank: int,
             world: int) -> dict:
    """Mean hard Dice and embedding MSE to the teacher over this rank's share, summed across ranks."""
    totals = torch.zeros(3, dtype=torch.float64)  # dice sum, mse sum, count
    for index in indices[rank::world]:
        sample = dataset[index]
        images, boxes, target = sample["image"][None], sample["box"][None], sample["mask"][None]
        embedding, logits, _ = step(images, boxes)
        predicted = (logits > 0).float()
        dice = 2 * (predicted * target).sum() / (predicted.sum() + target.sum()).clamp(min=1)
        mse = ((embedding - teacher.embed(images)) ** 2).mean() if teacher is not None else torch.tensor(0.0)
        totals += torch.tensor([float(dice), float(mse), 1.0], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(totals)
    count = max(totals[2].item(), 1.0)
    return {"val_dice": totals[0].item() / count, "val_embedding_mse": totals[1].item() / count,
            "val_samples": int(totals[2].item())}


def train_epoch(step: nn.Module, teacher, loader, optimizer, config: StageConfig, show: bool, epoch: int) -> dict:
    sums, batches = {}, 0
    progress = tqdm(loader, desc=f"stage {config.stage} epoch {epoch}", disable=not show, leave=False)
    for batch in progress:
        images, boxes, target = batch["image"], batch["box"], batch["mask"]
        embedding, logits, iou = step(images, boxes)
        terms = stage_losses(logits, iou, target, config.loss)
        if config.loss_weight("distill"):
            with torch.no_grad():
                teacher_embedding = teacher.embed(images)
                _, teacher_iou = teacher.decode(teacher_embedding, boxes)
            terms["distill"] = distillation_loss(embedding, teacher_embedding, teacher_iou)
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


def run(config: StageConfig, restart: bool = False) -> dict:
    rank, world = _distributed()
    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(config.seed)
    out = config.path(config.output_dir)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "log.jsonl"
    resume = load_checkpoint(last_path) if last_path.exists() and not restart else None
    if resume is None and rank == 0:
        log_path.unlink(missing_ok=True)  # a fresh start: the log describes this run only
    if resume is not None and resume["epoch"] + 1 >= config.epochs:
        if rank == 0:
            print(f"stage {config.stage}: already complete ({config.epochs} epochs) in {config.output_dir}")
        return resume["best"]

    recipe = load_recipe(config.path(config.recipe))
    train, val, train_files, val_files = _datasets(config)
    started = time.perf_counter()
    model, report = build_student(config, recipe, train, resume)
    parameters = _freeze(model, config.trainable_parts)
    step: nn.Module = StudentStep(model, config.trainable_parts)
    if world > 1:
        step = nn.parallel.DistributedDataParallel(step)
    teacher = load_litemedsam().eval().requires_grad_(False) if config.loss_weight("distill") else None
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum)
    first_epoch, best, history = 0, {"epoch": -1, "val_dice": -1.0}, []
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        first_epoch, best, history = resume["epoch"] + 1, resume["best"], resume["history"]
    if rank == 0:
        os.makedirs(out, exist_ok=True)
        print(f"stage {config.stage}: {len(train_files)} training / {len(val_files)} validation cases, "
              f"{sum(p.numel() for p in parameters):,} trainable parameters, world size {world}, "
              + (f"resuming at epoch {first_epoch}" if resume else
                 f"{sum(r['quantized'] for r in report)} layers newly quantized"))

    sampler = ModalityBalancedSampler(SliceIndex(train.files), config.samples_per_modality, config.seed,
                                      num_replicas=world, rank=rank)
    loader = DataLoader(train, batch_size=config.batch_size, sampler=sampler, collate_fn=collate)
    val_indices = spread(len(val), config.val_samples)

    def finish_epoch(epoch: int, record: dict) -> None:
        """Log the epoch, keep the best model so far, and write last.pt to resume from."""
        nonlocal best
        history.append(record)
        if record["val_dice"] > best["val_dice"]:
            best = {"epoch": epoch, "val_dice": record["val_dice"]}
        if rank == 0:
            payload = {"stage": config.stage, "epoch": epoch, "recipe": recipe.to_dict(),
                       "quantized_parts": list(config.quantized_parts), "model": model.state_dict(),
                       "config": config.to_dict(), "best": best, "history": history,
                       "train_cases": [f.case for f in train_files], "val_cases": [f.case for f in val_files],
                       "command": invoked_command(), "world_size": world,
                       "versions": library_versions("torch", "brevitas")}
            if best["epoch"] == epoch:
                save_checkpoint(best_path, payload)
            save_checkpoint(last_path, dict(payload, optimizer=optimizer.state_dict()))
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
                  flush=True)
        if world > 1:
            dist.barrier()

    if resume is None:  # epoch -1: the calibrated, untrained start; training has to beat it to be kept
        started_at = time.perf_counter()
        finish_epoch(-1, {"epoch": -1, "lr": 0.0, **validate(step, teacher, val, val_indices, rank, world),
                          "seconds": round(time.perf_counter() - started_at, 1)})
    for epoch in range(first_epoch, config.epochs):
        epoch_started = time.perf_counter()
        lr = learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.set_epoch(epoch)
        train.set_epoch(epoch)
        record = {"epoch": epoch, "lr": lr, **train_epoch(step, teacher, loader, optimizer, config, rank == 0,
                                                          epoch)}
        record.update(validate(step, teacher, val, val_indices, rank, world))
        record["seconds"] = round(time.perf_counter() - epoch_started, 1)
        finish_epoch(epoch, record)
    if rank == 0:
        print(f"stage {config.stage}: best epoch {best['epoch']} (validation Dice {best['val_dice']:.4f}) "
              f"-> {config.output_dir}/best.pt; {time.perf_counter() - started:.0f} s")
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="training/configs/qat-stage{1,2,3}.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field (value read as YAML); repeatable")
    parser.add_argument("--restart", action="store_true", help="ignore last.pt and start the stage afresh")
    args = parser.parse_args(argv)
    try:
        run(load_stage_config(args.config, args.overrides), restart=args.restart)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
