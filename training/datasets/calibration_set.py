"""Calibration items from real labelled cases: model-space images and their boxes.

Shared by the post-training quantizers (NNCF on the OpenVINO IR, Brevitas on the torch model): 2D images
with their boxes, and for 3D cases a few slices inside each box's z range (always the middle slice that
the box prompts), each with the boxes that cover it. `draw_cases` picks the cases: a seeded draw of a few
per modality from the cases a split file allows (its train list), so calibration never sees a test case and
several draws give the spread that one calibration set hides.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from qmedsam.engine import box_z_range, middle_slice
from qmedsam.npz_io import load_npz_case, npz_files_in
from qmedsam.preprocess import boxes_to_model_space, to_model_input

from training.datasets.cases import discover

MAX_BOXES = 16
SLICES_PER_BOX = 3


@dataclass
class CalibrationItem:
    case: str
    slice_index: Optional[int]  # None for a 2D image
    image: np.ndarray  # (1, 3, 256, 256) float32 encoder input
    boxes: np.ndarray  # (N, 4) float32 boxes in 256 space
    embedding: Optional[np.ndarray] = None  # (1, 256, 64, 64) from the FP32 encoder

    @property
    def label(self) -> str:
        return self.case if self.slice_index is None else f"{self.case}[z={self.slice_index}]"


def spread(count: int, limit: int) -> np.ndarray:
    """Up to `limit` indices spread evenly over range(count)."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))


def slices_for_box(z_low: int, z_high: int, count: int = SLICES_PER_BOX) -> list[int]:
    """`count` slices from z_low to z_high, always including the middle one the box prompts (engine.segment_3d)."""
    middle = middle_slice(z_low, z_high)
    if count <= 1:
        return [middle]
    lower = np.linspace(z_low, middle, count // 2 + 1)[:-1] if middle > z_low else []
    upper = np.linspace(middle, z_high, (count - 1) // 2 + 1)[1:] if z_high > middle else []
    picked = {middle, *(int(round(z)) for z in lower), *(int(round(z)) for z in upper)}
    return sorted(picked)


def calibration_items(data_dir: Path, cases: Optional[Iterable[str]] = None, exclude: Sequence[str] = (),
                      max_boxes: int = MAX_BOXES, slices_per_box: int = SLICES_PER_BOX) -> list[CalibrationItem]:
    """Encoder inputs and 256-space boxes from data_dir/imgs/*.npz (cases: names to keep, default all)."""
    paths = npz_files_in(Path(data_dir) / "imgs")
    if cases is not None:
        wanted = set(cases)
        paths = [p for p in paths if p.stem in wanted]
    paths = [p for p in paths if not any(part in p.stem for part in exclude)]
    if not paths:
        raise SystemExit(f"no calibration cases in {Path(data_dir) / 'imgs'}")
    items = []
    for path in paths:
        case = load_npz_case(path)
        if case.kind == "2D":
            height, width = case.image.shape[:2]
            boxes = boxes_to_model_space(case.boxes, height, width)
            items.append(CalibrationItem(case.name, None, to_model_input(case.image)[0],
                                         boxes[spread(len(boxes), max_boxes)]))
            continue
        depth, height, width = case.image.shape
        ranges = [box_z_range(b, depth) for b in case.boxes]
        slices = sorted({z for low, high in ranges for z in slices_for_box(low, high, slices_per_box)})
        for z in slices:
            covering = [i for i, (low, high) in enumerate(ranges) if low <= z <= high]
            boxes = boxes_to_model_space(case.boxes[covering][:, [0, 1, 3, 4]], height, width)
            items.append(CalibrationItem(case.name, z, to_model_input(case.image[z])[0],
                                         boxes[spread(len(boxes), max_boxes)]))
    return items


def draw_cases(data_dir: Path, allowed: Optional[Iterable[str]], per_modality: int, seed: int) -> list[str]:
    """`per_modality` case names per modality (all where fewer), drawn with `seed` among data_dir's cases in `allowed`.

    Each modality has its own generator, seeded by (seed, modality), so a modality's draw does not depend on
    which other modalities the folder holds. allowed=None means every case under data_dir.
    """
    if per_modality < 1:
        raise ValueError(f"per_modality must be a positive number of cases, got {per_modality}.")
    wanted = None if allowed is None else set(allowed)
    by_modality = {}
    for source in discover([Path(data_dir)]):
        if wanted is None or source.case in wanted:
            by_modality.setdefault(source.modality, set()).add(source.case)
    if not by_modality:
        raise ValueError(f"none of the allowed cases is under {data_dir}; check --data against the split file.")
    drawn = []
    for modality, cases in sorted(by_modality.items()):
        rng = np.random.default_rng((seed, zlib.crc32(modality.encode())))
        drawn += rng.choice(sorted(cases), size=min(per_modality, len(cases)), replace=False).tolist()
    return sorted(drawn)
