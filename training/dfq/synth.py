"""DFQ-SAM synthetic calibration images: optimised from Gaussian noise through the frozen float LiteMedSAM.

    python -m training.dfq.synth --out runs/dfq/synthetic --count 16

No real image is read. Each image starts as noise with 1–3 random ellipse targets and their boxes, and is
optimised with Adam (shared/DESIGN.md §3) so that
  - the float model segments the targets (focal + Dice on the masks, and the model's predicted IoU pulled
    towards 1), while the targets evolve towards what the model itself segments ("pseudo-positive label
    evolution"; DFQ-SAM drives it with an auxiliary TransUNet, which is not available here, so the
    model's own prediction does);
  - the attention outputs of every TinyViT block keep a rich distribution of patch-to-patch cosine
    similarities (the differential entropy of a Gaussian KDE of them is maximised, as in PSAQ-ViT; only
    real patches count, not the zeros TinyViT pads each map with to whole windows);
  - the image stays smooth (total variation).
Random flips and shifts are drawn at every step. Images are written in the evaluation layout that
calibration and QAT read (OUT/imgs/2DBox_Synthetic_dfq-sam-NNNN.npz with imgs + boxes, OUT/gts/... with
gts), one batch at a time, so an interrupted run resumes where it stopped with the same images.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from qmedsam.preprocess import MODEL_SIZE
from scipy import ndimage
from torch import Tensor, nn
from tqdm import tqdm

from training.datasets.cases import SYNTHETIC_CASE_PREFIX, jitter_box, mask_bbox
from training.litemedsam import load_litemedsam
from training.litemedsam.losses import dice_loss, focal_loss
from training.litemedsam.tiny_vit import TinyViTBlock
from training.provenance import REPO_ROOT, invoked_command

SIZE = MODEL_SIZE  # the model's square input side
BOX_JITTER = 3  # px per side


@dataclass(frozen=True)
class SynthesisConfig:
    count: int = 8
    batch: int = 4  # images optimised together (one forward pass)
    rounds: int = 2  # each round restarts the warm-up + cosine learning-rate schedule
    steps: int = 40  # per round (DFQ-SAM: hundreds; 2 cores allow ~2.5 s per image and step)
    lr: float = 0.05  # DFQ-SAM's 0.2 is in ImageNet-normalised units (std ~0.23); ours are [0, 1]
    warmup_fraction: float = 0.1
    evolve_every: int = 10  # steps between label evolutions
    evolve_after: int = 10  # first evolution: give the model something to segment first
    max_growth: float = 1.5  # an evolved target's area is at most this times the previous one
    max_objects: int = 3
    grey_fraction: float = 0.6  # grey images are one channel repeated (CT/MR/US/X-ray-like)
    max_shift: int = 8
    weights: dict = field(default_factory=lambda: {"focal": 20.0, "dice": 1.0, "iou": 1.0,
                                                   "patch_entropy": 0.05, "tv": 0.5})
    seed: int = 0


# --- targets -------------------------------------------------------------------------------------------

def random_ellipse(rng: np.random.Generator, margin: int) -> np.ndarray:
    """A filled ellipse (bool SIZE x SIZE) of random size, elongation and angle, inside the margin."""
    ry, rx = rng.uniform(12, 60, size=2)
    cy, cx = rng.uniform(margin + 60, SIZE - margin - 60, size=2)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def user_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The target's box as a user would draw it: its bounding box grown by 0..BOX_JITTER px per side."""
    return jitter_box(mask_bbox(mask), rng, BOX_JITTER).astype(np.float32)


def initial_targets(rng: np.random.Generator, config: SynthesisConfig) -> list[np.ndarray]:
    """1..max_objects ellipses that do not overlap (a later one is dropped if it would)."""
    masks: list[np.ndarray] = []
    for _ in range(rng.integers(1, config.max_objects + 1)):
        ellipse = random_ellipse(rng, config.max_shift)
        if not any((ellipse & other).any() for other in masks):
            masks.append(ellipse)
    return masks


def evolve_target(target: np.ndarray, probability: np.ndarray, box: np.ndarray, max_growth: float) -> np.ndarray:
    """The next pseudo-positive label: the model's most confident connected region near the target.

    Keeps the connected component of (probability > 0.5) inside the box with the highest summed
    probability; bounds its growth by intersecting with a dilation of the old target; keeps the old
    target when the model found nothing worth keeping (fewer than a quarter of its pixels).
    """
    x0, y0, x1, y1 = box.astype(int)
    inside = np.zeros_like(target)
    inside[y0:y1 + 1, x0:x1 + 1] = True
    components, count = ndimage.label((probability > 0.5) & inside)
    if count == 0:
        return target
    scores = ndimage.sum(probability, components, index=np.arange(1, count + 1))
    best = components == (1 + int(np.argmax(scores)))
    area = target.sum()
    if best.sum() > max_growth * area:
        best &= grown_to_area(target, max_growth * area)
    return best if best.sum() >= area / 4 else target


def grown_to_area(mask: np.ndarray, area: float, step: int = 2) -> np.ndarray:
    """The smallest dilation of `mask` by a multiple of `step` px (city-block) that covers `area` pixels.

    Computed from a distance map rather than by dilating until large enough, so it ends even when `area`
    exceeds the image (then the whole image) or the mask is empty (then the empty mask).
    """
    if not mask.any():
        return mask
    distance = ndimage.distance_transform_cdt(~mask, metric="taxicab")
    needed = min(math.ceil(area), mask.size)
    radius = np.partition(distance.ravel(), needed - 1)[needed - 1] if needed > 0 else 0
    return distance <= step * math.ceil(radius / step)


# --- losses --------------------------------------------------------------------------------------------

def total_variation(images: Tensor) -> Tensor:
    return (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + \
        (images[..., :, 1:] - images[..., :, :-1]).abs().mean()


def similarity_entropy(features: Tensor, generator: torch.Generator, tokens: int = 512, pairs: int = 2048) -> Tensor:
    """Differential entropy of the pairwise cosine similarities between patches of one sample.

    features (tokens_total, C). A random subset of tokens gives the similarity matrix; a random subset of
    its off-diagonal entries is both the KDE's data and the points where the density is evaluated
    (Scott's bandwidth), and the entropy is -mean log density.
    """
    pick = torch.randperm(features.shape[0], generator=generator)[:tokens]
    unit = F.normalize(features[pick], dim=1)
    similarity = unit @ unit.T
    upper = torch.triu_indices(len(pick), len(pick), offset=1)
    values = similarity[upper[0], upper[1]]
    values = values[torch.randperm(values.numel(), generator=generator)[:pairs]]
    bandwidth = 1.06 * values.std().detach().clamp(min=1e-3) * values.numel() ** -0.2
    kernel = torch.exp(-0.5 * ((values[:, None] - values[None, :]) / bandwidth) ** 2)
    density = kernel.mean(1) / (bandwidth * math.sqrt(2 * math.pi))
    return -torch.log(density + 1e-8).mean()


class AttentionOutputs:
    """Forward hooks collecting the output of every TinyViT block's window attention, per sample.

    TinyViT pads each feature map to a multiple of its window size before attention; the padded positions
    are not patches of the image, so only the h x w real positions are kept: (batch, h * w, C).
    """

    def __init__(self, encoder: nn.Module) -> None:
        self.outputs: list[Tensor] = []
        self.batch = 1
        self.map_sizes: dict[nn.Module, tuple[int, int]] = {}  # each block's (h, w) before padding
        self.handles = []
        for block in encoder.modules():
            if isinstance(block, TinyViTBlock):
                self.handles.append(block.register_forward_pre_hook(self._remember_map_size))
                self.handles.append(block.attn.register_forward_hook(self._keep(block)))

    def _remember_map_size(self, block: TinyViTBlock, inputs) -> None:  # inputs[0]: (batch, h, w, C)
        self.map_sizes[block] = tuple(inputs[0].shape[1:3])

    def _keep(self, block: TinyViTBlock):
        def keep(module, inputs, output) -> None:  # output: (batch * windows, window tokens, C)
            self.outputs.append(unpadded_tokens(output, self.batch, self.map_sizes[block], block.window_size))
        return keep

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def unpadded_tokens(windows: Tensor, batch: int, map_size: tuple[int, int], window_size: int) -> Tensor:
    """Window-attention output (batch * windows, ws * ws, C) back on the map, padding dropped: (batch, h * w, C).

    Inverts TinyViTBlock's windowing (the map padded at the bottom and right to whole windows).
    """
    height, width = map_size
    rows, cols = -(-height // window_size), -(-width // window_size)
    channels = windows.shape[-1]
    grid = windows.reshape(batch, rows, cols, window_size, window_size, channels).transpose(2, 3)
    grid = grid.reshape(batch, rows * window_size, cols * window_size, channels)
    return grid[:, :height, :width].reshape(batch, height * width, channels)


def mean_patch_entropy(model: nn.Module, images: Tensor, seed: int = 0) -> float:
    """The patch-similarity entropy term (mean over blocks and images) of un-augmented images, for checks."""
    hooks = AttentionOutputs(model.image_encoder)
    hooks.batch = len(images)
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            model.embed(images)
        return torch.stack([similarity_entropy(out[i], generator)
                            for out in hooks.outputs for i in range(len(out))]).mean().item()
    finally:
        hooks.close()


# --- one batch ------------------------------------------------------------------------------------------

def _lr_factor(step: int, steps: int, warmup_fraction: float) -> float:
    warmup = max(1, int(steps * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _shift_zero_fill(t: Tensor, dy: int, dx: int) -> Tensor:
    """Shift the last two axes, filling with zeros (masks must not wrap around like the image does)."""
    padded = F.pad(t, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    height, width = t.shape[-2:]
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + height, left:left + width]


def _augment(images: Tensor, masks: Tensor, rng: np.random.Generator, max_shift: int):
    """One random flip/shift for the whole batch: the images roll, the masks shift with zero fill.

    Returns the augmented images and masks and the inverse transform (for predictions).
    """
    flip_x, flip_y = bool(rng.integers(2)), bool(rng.integers(2))
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    dims = [d for d, f in ((-1, flip_x), (-2, flip_y)) if f]

    def flip(t: Tensor) -> Tensor:
        return t.flip(dims) if dims else t

    def inverse(t: Tensor) -> Tensor:
        return flip(torch.roll(t, shifts=(-dy, -dx), dims=(-2, -1)))

    images = torch.roll(flip(images), shifts=(dy, dx), dims=(-2, -1))
    return images, _shift_zero_fill(flip(masks), dy, dx), inverse


def image_seed(config: SynthesisConfig, index: int) -> int:
    """Each image has its own seed, so batching and resuming never change an image."""
    return config.seed * 100003 + index


def _draw_start(config: SynthesisConfig, index: int):
    rng = np.random.default_rng(image_seed(config, index))
    masks = initial_targets(rng, config)
    boxes = [user_box(m, rng) for m in masks]
    grey = bool(rng.random() < config.grey_fraction)
    noise = np.clip(rng.normal(0.5, 0.2, size=(3, SIZE, SIZE)), 0, 1).astype(np.float32)
    return rng, masks, boxes, grey, noise


def starting_point(config: SynthesisConfig, index: int) -> tuple[np.ndarray, list, list]:
    """Image `index`'s noise (3, H, W) as the model first sees it, its ellipse targets and boxes."""
    _, masks, boxes, grey, noise = _draw_start(config, index)
    image = np.repeat(noise.mean(0, keepdims=True), 3, axis=0) if grey else noise
    return image, masks, boxes


class BatchSynthesizer:
    """Optimises one batch of images; targets, boxes and the image of each box live in numpy."""

    def __init__(self, model: nn.Module, config: SynthesisConfig, indices: list[int]) -> None:
        self.model, self.config = model, config
        starts = [_draw_start(config, index) for index in indices]
        self.rngs = [start[0] for start in starts]
        self.targets = [start[1] for start in starts]
        self.boxes = [start[2] for start in starts]
        self.grey = torch.tensor([start[3] for start in starts])
        self.pixels = torch.from_numpy(np.stack([start[4] for start in starts])).requires_grad_(True)
        self.step_rng = np.random.default_rng(image_seed(config, indices[0]) + 7919)
        self.generator = torch.Generator().manual_seed(image_seed(config, indices[0]))
        self.history: list[dict] = []

    def images(self) -> Tensor:
        grey = self.pixels.mean(1, keepdim=True).expand_as(self.pixels)
        return torch.where(self.grey[:, None, None, None], grey, self.pixels)

    def _target_tensor(self) -> tuple[Tensor, Tensor, np.ndarray]:
        """Targets (N, 1, H, W), their boxes as filled rectangles (N, 1, H, W), and each one's image index."""
        owners = np.array([i for i, masks in enumerate(self.targets) for _ in masks])
        masks = np.stack([m for masks in self.targets for m in masks])[:, None].astype(np.float32)
        box_masks = np.zeros_like(masks)
        for k, (x0, y0, x1, y1) in enumerate(b.astype(int) for boxes in self.boxes for b in boxes):
            box_masks[k, 0, y0:y1 + 1, x0:x1 + 1] = 1
        return torch.from_numpy(masks), torch.from_numpy(box_masks), owners

    def step(self, hooks: AttentionOutputs, evolve: bool) -> dict:
        config, weights = self.config, self.config.weights
        masks, box_masks, owners = self._target_tensor()
        # Targets and their (jittered) boxes, rasterised, take the image's flip and shift together.
        images, moved, inverse = _augment(self.images(), torch.cat([masks, box_masks], 1), self.step_rng,
                                          config.max_shift)
        masks_aug = moved[:, :1]
        boxes_aug = torch.stack([raster_box(m) for m in moved[:, 1]])
        hooks.outputs.clear()
        hooks.batch = len(images)
        embedding = self.model.embed(images)
        logits, iou = self.model.decode(embedding[torch.from_numpy(owners)], boxes_aug)
        terms = {"focal": focal_loss(logits, masks_aug), "dice": dice_loss(logits, masks_aug),
                 "iou": ((1 - iou) ** 2).mean(), "tv": total_variation(images)}
        entropies = [similarity_entropy(out[i], self.generator) for out in hooks.outputs for i in range(len(out))]
        terms["patch_entropy"] = -torch.stack(entropies).mean()  # maximised
        loss = sum(weights[name] * value for name, value in terms.items())
        loss.backward()
        if evolve:
            self._evolve(torch.sigmoid(inverse(logits.detach()))[:, 0].numpy(), owners)
        return {name: value.item() for name, value in terms.items()} | {"loss": loss.item()}

    def _evolve(self, probabilities: np.ndarray, owners: np.ndarray) -> None:
        flat = 0
        for i, masks in enumerate(self.targets):
            for j in range(len(masks)):
                evolved = evolve_target(masks[j], probabilities[flat], self.boxes[i][j], self.config.max_growth)
                masks[j] = evolved
                self.boxes[i][j] = user_box(evolved, self.rngs[i])
                flat += 1

    def run(self, progress: tqdm) -> list[dict]:
        config = self.config
        hooks = AttentionOutputs(self.model.image_encoder)
        optimizer = torch.optim.Adam([self.pixels], lr=config.lr)
        try:
            for round_index in range(config.rounds):
                for step in range(config.steps):
                    for group in optimizer.param_groups:
                        group["lr"] = config.lr * _lr_factor(step, config.steps, config.warmup_fraction)
                    done = round_index * config.steps + step
                    evolve = done >= config.evolve_after and (done - config.evolve_after) % config.evolve_every == 0
                    optimizer.zero_grad()
                    terms = self.step(hooks, evolve)
                    optimizer.step()
                    with torch.no_grad():
                        self.pixels.clamp_(0, 1)
                    self.history.append(terms)
                    progress.update(1)
                    progress.set_postfix({k: f"{v:.3g}" for k, v in terms.items() if k != "loss"})
        finally:
            hooks.close()
        return self.history


def raster_box(box_mask: Tensor) -> Tensor:
    """x_min, y_min, x_max, y_max of a filled rectangle (the whole image if a shift pushed it out)."""
    ys, xs = torch.nonzero(box_mask, as_tuple=True)
    if len(ys) == 0:
        return torch.tensor([0.0, 0.0, SIZE - 1.0, SIZE - 1.0])
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()


# --- the command ---------------------------------------------------------------------------------------

def case_paths(out: Path, index: int) -> tuple[Path, Path]:
    name = f"{SYNTHETIC_CASE_PREFIX}{index:04d}.npz"
    return out / "imgs" / name, out / "gts" / name


def save_batch(out: Path, indices: list[int], synth: BatchSynthesizer) -> None:
    """Writes each image as uint8 (H, W, 3) with its boxes and labels; the image file last, so its
    presence means the case is complete (resume checks only it)."""
    images = (synth.images().detach().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for position, index in enumerate(indices):
        image_path, label_path = case_paths(out, index)
        labels = np.zeros((SIZE, SIZE), dtype=np.uint8)
        for label, mask in enumerate(synth.targets[position], start=1):
            labels[mask] = label
        boxes = np.stack(synth.boxes[position]).astype(np.float64)
        np.savez_compressed(label_path, gts=labels)
        partial = image_path.with_suffix(".partial.npz")
        np.savez_compressed(partial, imgs=images[position], boxes=boxes)
        partial.replace(image_path)


def synthesize(out: Path, config: SynthesisConfig, threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    (out / "imgs").mkdir(parents=True, exist_ok=True)
    (out / "gts").mkdir(parents=True, exist_ok=True)
    manifest_path = out / "synthesis.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest and manifest.get("config") != _config_record(config):
        raise SystemExit(f"{out} holds images made with another configuration (see {manifest_path.name}); "
                         "choose another --out folder or delete that one.")
    manifest = {"config": _config_record(config), "command": invoked_command(), "batches": manifest.get("batches", {})}
    todo = [i for i in range(config.count) if not case_paths(out, i)[0].exists()]
    model = load_litemedsam().eval()
    model.requires_grad_(False)
    batches = [todo[i:i + config.batch] for i in range(0, len(todo), config.batch)]
    with tqdm(total=len(batches) * config.rounds * config.steps, desc="synthesis", unit="step") as progress:
        for indices in batches:
            started = time.perf_counter()
            synth = BatchSynthesizer(model, config, indices)
            history = synth.run(progress)
            save_batch(out, indices, synth)
            manifest["batches"][",".join(map(str, indices))] = {
                "seconds": round(time.perf_counter() - started, 1),
                "first": history[0], "last": history[-1]}
            manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _config_record(config: SynthesisConfig) -> dict:
    record = asdict(config)
    record.pop("count")  # adding images to a folder later is allowed
    record.pop("batch")  # batching is a speed choice; each image has its own seed
    # Folders made before the entropy term dropped TinyViT's window padding hold images of another objective.
    record["patch_entropy_tokens"] = "unpadded"
    return record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "dfq" / "synthetic")
    defaults = SynthesisConfig()
    for name in ("count", "batch", "rounds", "steps", "seed", "evolve_every", "evolve_after", "max_objects"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("lr", "grey_fraction"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument("--weight", action="append", default=[], metavar="TERM=VALUE",
                        help=f"loss weight override, terms: {', '.join(defaults.weights)}")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    weights = dict(defaults.weights)
    for item in args.weight:
        term, _, value = item.partition("=")
        if term not in weights:
            parser.error(f"--weight {item}: unknown term {term!r}; terms are {', '.join(weights)}")
        weights[term] = float(value)
    values = {name: getattr(args, name) for name in ("count", "batch", "rounds", "steps", "seed", "evolve_every",
                                                     "evolve_after", "max_objects", "lr", "grey_fraction")}
    config = SynthesisConfig(**values, weights=weights)
    if config.count < 1 or config.batch < 1 or config.steps < 1 or config.rounds < 1:
        parser.error("--count, --batch, --steps and --rounds must be at least 1")
    manifest = synthesize(args.out, config, args.threads)
    print(f"{config.count} synthetic images in {args.out} "
          f"({sum(b['seconds'] for b in manifest['batches'].values()):.0f} s of synthesis in total)")


if __name__ == "__main__":
    main()
