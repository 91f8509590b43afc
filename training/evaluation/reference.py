"""The official LiteMedSAM inference semantics in torch + OpenCV: the yardstick for the engine.

Follows the CVPR24 MedSAM-on-Laptop baseline (MedSAM repo, LiteMedSAM branch, CVPR24_LiteMedSAM_infer.py)
step by step: cv2 INTER_AREA resize of the longest side to 256, min-max normalisation, bottom/right
zero padding, boxes scaled and truncated, one decoder call per box, crop + bilinear resize + threshold,
3D propagation from the middle slice. With `share_embeddings=False` every box re-encodes every slice it
covers, as the baseline does; tests use `share_embeddings=True`, which changes timing, not results.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from training.litemedsam import LiteMedSAM, load_litemedsam

SIDE = 256


def resize_longest_side(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    scale = SIDE / max(height, width)
    size = (int(width * scale + 0.5), int(height * scale + 0.5))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def pad_to_side(image: np.ndarray) -> np.ndarray:
    pad = ((0, SIDE - image.shape[0]), (0, SIDE - image.shape[1])) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, pad)


def scale_box(box: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.array([int(v * SIDE / max(height, width)) for v in box], np.float32)


def box_from_previous_mask(mask_256: np.ndarray, margin: int = 3) -> np.ndarray:
    rows, cols = np.nonzero(mask_256)
    return np.array([max(0, cols.min() - margin), max(0, rows.min() - margin),
                     min(SIDE, cols.max() + margin), min(SIDE, rows.max() + margin)], np.float32)


class OfficialPipeline:
    def __init__(self, model: LiteMedSAM | None = None, share_embeddings: bool = False):
        self.model = model if model is not None else load_litemedsam()
        self.share_embeddings = share_embeddings
        self._embeddings: dict = {}
        self.encoder_runs = 0

    @torch.inference_mode()
    def _embed(self, image_3c: np.ndarray, key=None):
        if self.share_embeddings and key is not None and key in self._embeddings:
            return self._embeddings[key]
        small = resize_longest_side(image_3c)
        small = (small - small.min()) / np.clip(small.max() - small.min(), 1e-8, None)
        tensor = torch.from_numpy(pad_to_side(small)).float().permute(2, 0, 1)[None]
        result = (self.model.embed(tensor), small.shape[:2])
        self.encoder_runs += 1
        if self.share_embeddings and key is not None:
            self._embeddings[key] = result
        return result

    @torch.inference_mode()
    def _segment_box(self, embedding, box_256, resized_hw, original_hw) -> np.ndarray:
        logits, _ = self.model.decode(embedding, torch.as_tensor(box_256[None], dtype=torch.float32))
        logits = logits[..., : resized_hw[0], : resized_hw[1]]
        logits = F.interpolate(logits, size=original_hw, mode="bilinear", align_corners=False)
        return (torch.sigmoid(logits)[0, 0] > 0.5).numpy()

    def segment_2d(self, image_3c: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self._embeddings.clear()
        height, width = image_3c.shape[:2]
        embedding, resized_hw = self._embed(image_3c)
        segs = np.zeros((height, width), np.uint8)
        for label, box in enumerate(boxes, start=1):
            mask = self._segment_box(embedding, scale_box(box, height, width), resized_hw, (height, width))
            segs[mask] = label
        return segs

    def segment_3d(self, volume: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self._embeddings.clear()
        depth, height, width = volume.shape
        segs = np.zeros(volume.shape, np.uint8)
        for label, box in enumerate(boxes, start=1):
            x_min, y_min, z_min, x_max, y_max, z_max = (int(v) for v in box)
            middle_box = np.array([x_min, y_min, x_max, y_max])
            # Written out rather than qmedsam.engine.middle_slice: this is the oracle the engine is tested against.
            z_middle = int((z_max - z_min) / 2 + z_min)
            this_box = np.zeros(volume.shape, np.uint8)
            upward = range(z_middle, min(z_max + 1, depth))
            downward = range(z_middle - 1, max(-1, z_min - 1), -1)
            for direction, slices in ((-1, upward), (+1, downward)):
                for z in slices:
                    image_3c = np.repeat(volume[z][:, :, None], 3, axis=-1)
                    embedding, resized_hw = self._embed(image_3c, key=z)
                    previous = None if z == z_middle else pad_to_side(resize_longest_side(this_box[z + direction]))
                    if previous is not None and previous.max() > 0:
                        box_256 = box_from_previous_mask(previous)
                    else:
                        box_256 = scale_box(middle_box, height, width)
                    mask = self._segment_box(embedding, box_256, resized_hw, (height, width))
                    this_box[z, mask] = label
            segs[this_box > 0] = label
        return segs

    def segment_case(self, kind: str, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.segment_2d(image, boxes) if kind == "2D" else self.segment_3d(image, boxes)
