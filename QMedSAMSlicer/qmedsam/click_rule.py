"""The local click rule (issue 17, docs/clicks.md): a click changes only the part of the mask around it.

LiteMedSAM's click decoder barely follows clicks: re-decoding with box + all clicks moves the whole mask, often
for the worse. So each click is applied on its own, from the mask before it:

- a positive click takes the mask token (of SAM's four) that agrees with the most clicks (token 0 among equals,
  else the highest predicted IoU); a negative click takes token 0 (the multimask tokens were measured to hurt);
- only the 8-connected region of change that holds the click is applied, so a click the decoder does not follow
  (its pixel unchanged) changes nothing;
- a negative click trims: a change that would remove more than half of the mask is not applied.

Written once, numpy only: the engine (qmedsam.engine) and the torch protocol (training/clicks/protocol.py)
both use it. Clicks are (x, y, positive) in image pixels, x the column and y the row.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def click_pixel(click) -> tuple[int, int]:
    """(row, column) of the pixel that holds a click (x, y, ...) in image pixels (validated: inside the image)."""
    return int(np.floor(click[1])), int(np.floor(click[0]))


def clicks_satisfied(mask: np.ndarray, clicks: Sequence) -> int:
    """How many clicks the mask agrees with: positive ones inside, negative ones outside."""
    return sum(bool(mask[click_pixel(click)]) == bool(click[2]) for click in clicks)


def _fill_runs(seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Every run (along the last axis) of `mask` that holds a seed pixel, fully set."""
    flat, seeds = mask.ravel(), (seed & mask).ravel()
    starts = flat.copy()
    starts[1:] &= ~flat[:-1]
    starts[:: mask.shape[-1]] = flat[:: mask.shape[-1]]  # a row's first pixel starts a run
    run_of = np.cumsum(starts) * flat
    seeded = np.zeros(int(np.count_nonzero(starts)) + 1, bool)
    seeded[run_of[seeds]] = True
    seeded[0] = False
    return seeded[run_of].reshape(mask.shape)


def _dilate_8(mask: np.ndarray) -> np.ndarray:
    """3 x 3 dilation (8-connected neighbours)."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    rows = grown.copy()
    grown[:, 1:] |= rows[:, :-1]
    grown[:, :-1] |= rows[:, 1:]
    return grown


def component_at(mask: np.ndarray, row: int, col: int) -> np.ndarray:
    """The 8-connected component of `mask` that holds (row, col), as a bool image (empty when it is off).

    Flood fill by whole runs along rows and columns, then one 8-neighbour step, until nothing grows: a few
    passes for compact regions, each a handful of vectorised operations on the mask's bounding box.
    """
    component = np.zeros(mask.shape, bool)
    if not mask[row, col]:
        return component
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = np.s_[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    inside = mask[box]
    grown = np.zeros(inside.shape, bool)
    grown[row - rows[0], col - cols[0]] = True
    while True:
        before = np.count_nonzero(grown)
        grown = _fill_runs(grown, inside)
        grown = _fill_runs(grown.T, inside.T).T
        grown = _dilate_8(grown) & inside
        if np.count_nonzero(grown) == before:
            break
    component[box] = grown
    return component


def bounding_region(mask: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """A full-size mask as the engine paints masks: ((row slice, col slice), bool block), None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    region = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    return region, mask[region]


def chosen_token(candidates: np.ndarray, iou: np.ndarray, clicks: Sequence) -> int:
    """The token whose mask the last of `clicks` takes (see the module docstring)."""
    if not bool(clicks[-1][2]):
        return 0
    agreement = [clicks_satisfied(mask, clicks) for mask in candidates]
    best = [index for index, value in enumerate(agreement) if value == max(agreement)]
    return 0 if 0 in best else max(best, key=lambda index: float(iou[index]))


def refine_locally(previous: np.ndarray, candidates: np.ndarray, iou: np.ndarray, clicks: Sequence) -> np.ndarray:
    """The mask after the last of `clicks`, from the mask before it (`previous`, (H, W) bool) and the decoder's
    masks for box + all clicks (`candidates` (4, H, W) bool, token 0 first; `iou` (4,) their predicted IoU)."""
    click = clicks[-1]
    change = candidates[chosen_token(candidates, iou, clicks)] ^ previous
    region = component_at(change, *click_pixel(click))
    if not region.any():
        return previous
    refined = previous ^ region
    if not bool(click[2]) and refined.sum() < previous.sum() / 2:
        return previous
    return refined


__all__ = ["bounding_region", "chosen_token", "click_pixel", "clicks_satisfied", "component_at", "refine_locally"]
