"""The segmentation engine: box prompts in, label images out, with the official LiteMedSAM semantics.

What it adds to the official pipeline, without changing a single mask:
- every slice is encoded once, whatever the number of boxes that cover it (content-keyed LRU cache);
- boxes on a slice are decoded together, in blocks sized from a memory budget;
- only the region around each mask is resized back to full resolution;
- optional clicks after a box (issue 17): a box with clicks starts from its box-only mask and replays its clicks
  one at a time, each through the click decoder and the local click rule (qmedsam.click_rule); boxes without
  clicks go through the box-only decoder as before, so box-only masks are the same bytes with or without clicks.
Overlaps follow the challenge rule: a later box overwrites an earlier one (higher label wins).
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .catalogue import ClickDecoderEntry, ModelEntry, find_click_decoder, find_model
from .click_cache import ClickPrefixCache
from .click_rule import bounding_region, refine_locally
from .errors import QMedSAMError
from .postprocess import MaskResizer
from .preprocess import (
    box_from_mask_in_model_space,
    boxes_to_model_space,
    points_to_model_space,
    resized_shape,
    to_model_input,
)
from .runtime import CompiledClickDecoder, CompiledPair
from .validation import (
    box_z_range,
    validate_boxes_2d,
    validate_boxes_3d,
    validate_clicks_2d,
    validate_clicks_3d,
    validate_image_2d,
    validate_volume,
)

EMBEDDING_MB = 256 * 64 * 64 * 4 / 2**20  # one cached image embedding: 4 MiB
# Peak working memory of the FP32 decoder per box in a batch: `qmedsam bench` measures it (peak RSS growth
# from 1 to 33 boxes in a fresh process, "decoder working memory" line); this is that number rounded up.
DECODER_MB_PER_BOX = 36.0
# Masks kept after each click prefix (qmedsam.click_cache): 256 results of a 512 x 512 image.
CLICK_PREFIX_MB = 64.0

Progress = Callable[[int, int], None]  # (steps done, steps in all)
# Per box: (label, box in 256 space, (P, 3) clicks x, y, positive in image pixels), P >= 0.
ClickTask = tuple[int, np.ndarray, np.ndarray]


def middle_slice(z_low: int, z_high: int) -> int:
    """The slice a 3D box's propagation starts on: the official int((z_max - z_min) / 2 + z_min)."""
    return int((z_high - z_low) / 2 + z_low)


class Cancelled(QMedSAMError):
    """The caller's cancel callback asked to stop; nothing was written."""


@dataclass
class EngineStats:
    encoder_runs: int = 0
    cache_hits: int = 0
    decoder_calls: int = 0
    boxes_decoded: int = 0


class EmbeddingCache:
    """Image embeddings keyed by the image's content, least recently used evicted beyond `max_mb`.

    Keyed by the raw pixels (not the model input) so that a hit skips pre-processing as well.
    """

    def __init__(self, max_mb: float):
        self.capacity = max(0, int(max_mb // EMBEDDING_MB))
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()

    @staticmethod
    def key(image: np.ndarray) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{image.shape}{image.dtype.str}".encode())
        digest.update(np.ascontiguousarray(image).data)
        return digest.digest()

    def get(self, key: bytes) -> np.ndarray | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: bytes, embedding: np.ndarray) -> None:
        if self.capacity == 0:
            return
        self._entries[key] = embedding
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class _Slice:
    """One encoded slice (or 2D image) and how to map its logits back."""

    embedding: np.ndarray
    resizer: MaskResizer
    shape: tuple[int, int]
    key: bytes  # EmbeddingCache.key of the image


@dataclass
class _Propagation:
    """One 3D box walking away from its middle slice."""

    label: int
    middle_box: np.ndarray  # in 256 space
    slice_shape: tuple
    next_box: dict = field(default_factory=dict)  # direction -> box for the next slice (None: fall back)
    clicks: dict = field(default_factory=dict)  # slice z -> (P, 4) clicks x, y, z, positive on that slice


class Segmenter:
    """LiteMedSAM on OpenVINO. Create once, reuse for many images (the embedding cache lives here)."""

    def __init__(self, model: str | ModelEntry | None = None, threads: int | None = None,
                 cache_mb: float = 512.0, decoder_memory_mb: float = 512.0,
                 models_dir: Path | None = None, compile_cache_dir: Path | None = None,
                 inference_precision: str = "f32"):
        self.entry = model if isinstance(model, ModelEntry) else find_model(model, models_dir)
        self.runtime = CompiledPair(self.entry, threads=threads, cache_dir=compile_cache_dir,
                                    inference_precision=inference_precision)
        self._models_dir = models_dir
        # compiled on the first click; shared with siblings (copy.copy). "generation" counts decoder swaps, so
        # that no sibling reuses a mask its click-prefix cache holds from an earlier decoder.
        self._click_decoder: dict = {"generation": 0}
        # a click the decoder does not follow paints/erases a disk around it (qmedsam.click_rule, docs/clicks.md)
        self.click_brush = True
        self._start_fresh(cache_mb, decoder_memory_mb)

    def _start_fresh(self, cache_mb: float, decoder_memory_mb: float) -> None:
        self.cache = EmbeddingCache(cache_mb)
        self.block_size = max(1, int(decoder_memory_mb // DECODER_MB_PER_BOX))
        self.stats = EngineStats()
        self.click_prefixes = ClickPrefixCache(CLICK_PREFIX_MB)

    def sibling(self, cache_mb: float = 512.0, decoder_memory_mb: float = 512.0) -> Segmenter:
        """Another Segmenter on the same compiled model (the expensive part) with its own cache, block size and
        statistics: settings changed on it never reach this one."""
        twin = copy.copy(self)
        twin._start_fresh(cache_mb, decoder_memory_mb)
        return twin

    @property
    def click_decoder(self) -> CompiledClickDecoder:
        """The catalogue's click decoder, compiled with this model's settings the first time clicks are given
        (a box-only user never pays for it). QMedSAMError when the catalogue has none."""
        if "compiled" not in self._click_decoder:
            self._click_decoder["compiled"] = CompiledClickDecoder(self.runtime, find_click_decoder(self._models_dir))
        return self._click_decoder["compiled"]

    def use_click_decoder(self, entry: ClickDecoderEntry) -> None:
        """Decode clicks with `entry` (e.g. a locally built variant) instead of the catalogue's; siblings too."""
        self._click_decoder["compiled"] = CompiledClickDecoder(self.runtime, entry)
        self._click_decoder["generation"] += 1

    # -- building blocks -------------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> _Slice:
        """Embedding of an (H, W, 3) or (H, W) image, from the cache when this exact input was seen."""
        key = EmbeddingCache.key(image)
        embedding = self.cache.get(key)
        if embedding is None:
            embedding = self.runtime.encode(to_model_input(image)[0])
            self.cache.put(key, embedding)
            self.stats.encoder_runs += 1
        else:
            self.stats.cache_hits += 1
        resized_hw = resized_shape(*image.shape[:2])
        return _Slice(embedding, MaskResizer(resized_hw, image.shape[:2]), image.shape[:2], key)

    def decode_logits(self, encoded: _Slice, boxes_256: np.ndarray,
                      points: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Low-res logits (N, 256, 256) and predicted IoU (N,), decoding at most `block_size` boxes at once.

        `points`: None (the box-only decoder) or ((N, P, 2) points, (N, P) labels) in 256 space for the click
        decoder, P >= 1 and the same for every box; its logits are (N, 4, 256, 256) and IoU (N, 4), all tokens.
        """
        logits, ious = [], []
        for start in range(0, len(boxes_256), self.block_size):
            block = slice(start, start + self.block_size)
            if points is None:
                block_logits, block_iou = self.runtime.decode(encoded.embedding, boxes_256[block])
            else:
                block_logits, block_iou = self.click_decoder.decode(encoded.embedding, boxes_256[block],
                                                                    points[0][block], points[1][block])
            logits.append(block_logits)
            ious.append(block_iou)
            self.stats.decoder_calls += 1
        self.stats.boxes_decoded += len(boxes_256)
        return np.concatenate(logits), np.concatenate(ious)

    def _decode_and_paint(self, encoded: _Slice, boxes_256: np.ndarray, labels: list[int],
                          target: np.ndarray, on_mask: Callable | None = None) -> None:
        """Decode boxes block by block and paint each mask into `target` (higher label wins)."""
        for start in range(0, len(boxes_256), self.block_size):
            block = slice(start, start + self.block_size)
            logits, _ = self.decode_logits(encoded, boxes_256[block])
            for label, box_logits in zip(labels[block], logits):
                found = encoded.resizer.mask(box_logits)
                if on_mask is not None:
                    on_mask(label, found)
                if found is None:
                    continue
                _paint(target, label, *found)

    def _decode_clicks_and_paint(self, encoded: _Slice, tasks: list[ClickTask], target: np.ndarray,
                                 on_mask: Callable | None = None) -> None:
        """Boxes without clicks through the box-only decoder, the others through `refine_with_clicks`; higher
        label wins."""
        plain = [task for task in tasks if len(task[2]) == 0]
        if plain:
            self._decode_and_paint(encoded, np.stack([t[1] for t in plain]), [t[0] for t in plain], target, on_mask)
        for label, box_256, clicks in tasks:
            if len(clicks) == 0:
                continue
            found = bounding_region(self.refine_with_clicks(encoded, box_256, clicks))
            if on_mask is not None:
                on_mask(label, found)
            if found is not None:
                _paint(target, label, *found)

    def refine_with_clicks(self, encoded: _Slice, box_256: np.ndarray, clicks: np.ndarray) -> np.ndarray:
        """One box's full-size mask after its (P, 3) clicks (x, y, positive in image pixels): the box-only mask,
        then each click in turn through the click decoder (box + clicks so far, all four tokens) and the local
        click rule, at the image's resolution as the torch protocol applies it. One decoder call per click, from
        the longest prefix of these clicks already refined on this slice and box (so a new click costs one call).
        The returned mask is read-only (it is the cached result)."""
        slice_key = encoded.key + f"{self._click_decoder['generation']} {self.click_brush}".encode()
        done, mask = self.click_prefixes.longest_prefix(slice_key, box_256, clicks)
        if mask is None:
            logits, _ = self.decode_logits(encoded, box_256[None])
            mask = self.click_prefixes.put(slice_key, box_256, clicks[:0], encoded.resizer.full_mask(logits[0]))
        points = points_to_model_space(clicks[:, :2], *encoded.shape)[None]
        point_labels = clicks[None, :, 2].astype(np.float32)
        for count in range(done + 1, len(clicks) + 1):
            logits, iou = self.decode_logits(encoded, box_256[None], (points[:, :count], point_labels[:, :count]))
            candidates = np.stack([encoded.resizer.full_mask(token) for token in logits[0]])
            mask = self.click_prefixes.put(slice_key, box_256, clicks[:count],
                                           refine_locally(mask, candidates, iou[0], clicks[:count],
                                                          brush=self.click_brush))
        return mask

    # -- public API ------------------------------------------------------------------------------------
    def segment_2d(self, image: np.ndarray, boxes: np.ndarray, clicks=None) -> np.ndarray:
        """Label image (H, W) uint8: box i gets label i + 1.

        `clicks`: None, or one list per box of (x, y, positive) in image pixels (x column, y row; positive 1 or
        0, True/False), empty for a box without clicks. A box with clicks starts from its box-only mask and
        applies its clicks in order through the local click rule (`refine_with_clicks`): where the decoder does
        not follow a click, the rule's brush paints or erases a disk around it (`click_brush`, qmedsam.click_rule;
        off: it changes nothing). The image is encoded once (cached); P clicks cost P + 1 decoder calls, and a
        call that adds clicks to a box's earlier ones costs one decoder call per new click.
        """
        image = validate_image_2d(image)
        boxes = validate_boxes_2d(boxes, image.shape[:2])
        clicks = validate_clicks_2d(clicks, len(boxes), image.shape[:2])
        encoded = self.encode(image)
        labels = np.zeros(image.shape[:2], np.uint8)
        height, width = image.shape[:2]
        boxes_256 = boxes_to_model_space(boxes, height, width)
        if clicks is None:
            self._decode_and_paint(encoded, boxes_256, list(range(1, len(boxes) + 1)), labels)
            return labels
        tasks = [(index + 1, box, box_clicks) for index, (box, box_clicks) in enumerate(zip(boxes_256, clicks))]
        self._decode_clicks_and_paint(encoded, tasks, labels)
        return labels

    def segment_3d(self, volume: np.ndarray, boxes: np.ndarray, clicks=None, progress: Progress | None = None,
                   cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """Label volume (D, H, W) uint8 from 3D boxes (x_min, y_min, z_min, x_max, y_max, z_max).

        Official propagation: each box starts on its middle slice with the given box, then walks up to
        z_max and down to z_min; a slice's box is the previous slice's mask bbox + 3 px (256 space), or the
        given box when that mask is empty. Slices are swept upward then downward so that every box that
        covers a slice is decoded from a single embedding of it.

        `clicks`: None, or one list per box of (x, y, z, positive) in voxels, z a slice the box covers. A
        clicked slice's mask is the box-only mask of the box propagation brings to it, refined by that slice's
        clicks in order (`refine_with_clicks`, the local click rule), and the walk goes on outward from the
        refined mask; slices nearer the middle slice keep their masks, and a box without clicks gets exactly its
        box-only result.
        """
        volume = validate_volume(volume)
        boxes = validate_boxes_3d(boxes, volume.shape)
        clicks = validate_clicks_3d(clicks, boxes, volume.shape)
        depth, height, width = volume.shape
        labels = np.zeros(volume.shape, np.uint8)
        walks, up_slices, down_slices = [], {}, {}
        for index, box in enumerate(boxes):
            z_low, z_high = box_z_range(box, depth)
            z_middle = middle_slice(z_low, z_high)
            walk = _Propagation(index + 1, boxes_to_model_space(box[[0, 1, 3, 4]], height, width), (height, width))
            if clicks is not None:
                for z in np.unique(clicks[index][:, 2]):
                    walk.clicks[int(z)] = clicks[index][clicks[index][:, 2] == z]
            walks.append(walk)
            for z in range(z_middle, z_high + 1):
                up_slices.setdefault(z, []).append((walk, z == z_middle))
            for z in range(z_low, z_middle):
                down_slices.setdefault(z, []).append((walk, False))
        sweeps = [("up", sorted(up_slices), up_slices), ("down", sorted(down_slices, reverse=True), down_slices)]
        total, done = len(up_slices) + len(down_slices), 0
        for direction, order, tasks_by_slice in sweeps:
            for z in order:
                if cancel is not None and cancel():
                    raise Cancelled("Segmentation cancelled; nothing was changed.")
                tasks = tasks_by_slice[z]
                boxes_256 = np.stack([self._slice_box(walk, direction, starts) for walk, starts in tasks])
                encoded = self.encode(volume[z])
                step = functools.partial(self._remember_mask, {w.label: (w, s) for w, s in tasks}, direction)
                if clicks is None:
                    self._decode_and_paint(encoded, boxes_256, [walk.label for walk, _ in tasks], labels[z],
                                           on_mask=step)
                else:
                    self._decode_clicks_and_paint(encoded, [self._click_task(walk, box, z) for (walk, _), box
                                                            in zip(tasks, boxes_256)], labels[z], on_mask=step)
                done += 1
                if progress is not None:
                    progress(done, total)
        return labels

    @staticmethod
    def _remember_mask(tasks: dict, direction: str, label: int, found) -> None:
        """Derive the box for this walk's next slice from the mask just found on this one."""
        walk, starts_here = tasks[label]
        box = None
        if found is not None:
            region, block = found
            mask = np.zeros(walk.slice_shape, bool)  # full size: the official resize is of the whole slice
            mask[region] = block
            box = box_from_mask_in_model_space(mask, label)
        walk.next_box[direction] = box
        if starts_here:
            walk.next_box["down"] = box  # the downward walk starts from the middle slice's mask

    @staticmethod
    def _click_task(walk: _Propagation, box_256: np.ndarray, z: int) -> ClickTask:
        """This walk's decoding on slice z: its propagated box and the clicks on that slice (maybe none)."""
        on_slice = walk.clicks.get(z, np.zeros((0, 4)))
        return walk.label, box_256, on_slice[:, [0, 1, 3]]

    @staticmethod
    def _slice_box(walk: _Propagation, direction: str, starts_here: bool) -> np.ndarray:
        if starts_here:
            return walk.middle_box
        previous = walk.next_box.get(direction)
        return walk.middle_box if previous is None else previous


def _paint(target: np.ndarray, label: int, region: tuple, mask: np.ndarray) -> None:
    """Paint a mask block into `target` at `region`; a higher label already there wins."""
    view = target[region]
    view[mask] = np.maximum(view[mask], label)


def segment_case(segmenter: Segmenter, kind: str, image: np.ndarray, boxes: np.ndarray,
                 progress: Progress | None = None, clicks=None) -> np.ndarray:
    """Dispatch a case ('2D' image with (N, 4) boxes or '3D' volume with (N, 6) boxes, optional clicks per box)
    to the engine call."""
    if kind == "2D":
        return segmenter.segment_2d(image, boxes, clicks)
    if kind == "3D":
        return segmenter.segment_3d(image, boxes, clicks, progress=progress)
    raise QMedSAMError(f"Unknown case kind {kind!r}; expected '2D' or '3D'.")


__all__ = ["Cancelled", "EmbeddingCache", "EngineStats", "Segmenter", "box_z_range", "middle_slice", "segment_case"]
