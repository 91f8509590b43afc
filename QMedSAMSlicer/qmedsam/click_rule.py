"""The local click rule (issue 17, docs/clicks.md): a click changes only the part of the mask around it.

LiteMedSAM's click decoder barely follows clicks: re-decoding with box + all clicks moves the whole mask, often
for the worse. So each click is applied on its own, from the mask before it:

- a positive click takes the mask token (of SAM's four) that agrees with the most clicks (token 0 among equals,
  else the highest predicted IoU); a negative click takes token 0 (the multimask tokens were measured to hurt);
- only the 8-connected region of change that holds the click is applied, so a click the decoder does not follow
  (its pixel unchanged) changes nothing;
- a negative click trims: a change that would remove more than half of the mask is not applied;
- with `brush` (the engine's default, chosen on the validation list, docs/clicks.md), a click the decoder does
  not follow paints or erases a disk around itself about as wide as the error it sits in, as a user would with
  Slicer's Paint effect, instead of changing nothing; so does a negative click whose decoder change would
  remove more than a quarter of the mask.

Written once, numpy only: the engine (qmedsam.engine) and the torch protocol (training/clicks/protocol.py)
both use it. Clicks are (x, y, positive) in image pixels, x the column and y the row.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

BRUSH_MIN_RADIUS = 3.0  # pixels: the smallest cap on a positive brush disk
# With the brush, a negative click's decoder change that removes more than this share of the mask is replaced by
# the brush disk (chosen on the validation list over "never": docs/clicks.md).
BRUSH_NEGATIVE_LIMIT = 0.25


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


def brush_disk(previous: np.ndarray, click) -> np.ndarray:
    """The brush stroke for a click the decoder did not follow: the disk around the clicked pixel that reaches
    the nearest pixel of the other kind (for a positive click the nearest mask pixel, for a negative one the
    nearest pixel outside the mask), so it covers about the width of the error the click sits in. Positive
    disks are capped at half the mask's equivalent radius (at least BRUSH_MIN_RADIUS) so that a click far from
    the mask cannot paint a large blob. Pixels the stroke would change, as a bool image (empty when none)."""
    row, col = click_pixel(click)
    positive = bool(click[2])
    other_rows, other_cols = np.nonzero(~previous if not positive else previous)
    if other_rows.size == 0:
        return np.zeros(previous.shape, bool)
    radius = float(np.sqrt(np.min((other_rows - row) ** 2 + (other_cols - col) ** 2)))
    if positive:
        radius = min(radius, max(BRUSH_MIN_RADIUS, 0.5 * np.sqrt(np.count_nonzero(previous) / np.pi)))
    reach = int(np.ceil(radius))
    rows = np.arange(max(row - reach, 0), min(row + reach + 1, previous.shape[0]))
    cols = np.arange(max(col - reach, 0), min(col + reach + 1, previous.shape[1]))
    disk = np.zeros(previous.shape, bool)
    disk[np.ix_(rows, cols)] = (rows[:, None] - row) ** 2 + (cols[None, :] - col) ** 2 < radius ** 2
    return disk & (previous != positive)


def _erases_too_much(previous: np.ndarray, region: np.ndarray, click) -> bool:
    """A negative click's decoder change that removes more than BRUSH_NEGATIVE_LIMIT of the mask."""
    return not bool(click[2]) and \
        np.count_nonzero(region & previous) > BRUSH_NEGATIVE_LIMIT * np.count_nonzero(previous)


def refine_locally(previous: np.ndarray, candidates: np.ndarray, iou: np.ndarray, clicks: Sequence,
                   brush: bool = False) -> np.ndarray:
    """The mask after the last of `clicks`, from the mask before it (`previous`, (H, W) bool) and the decoder's
    masks for box + all clicks (`candidates` (4, H, W) bool, token 0 first; `iou` (4,) their predicted IoU).
    `brush`: where the decoder does not follow the click, or would remove more than BRUSH_NEGATIVE_LIMIT of the
    mask for a negative one, apply `brush_disk` instead."""
    click = clicks[-1]
    change = candidates[chosen_token(candidates, iou, clicks)] ^ previous
    region = component_at(change, *click_pixel(click))
    if brush and (not region.any() or _erases_too_much(previous, region, click)):
        region = brush_disk(previous, click)
    if not region.any():
        return previous
    refined = previous ^ region
    if not bool(click[2]) and refined.sum() < previous.sum() / 2:
        return previous
    return refined


__all__ = ["BRUSH_MIN_RADIUS", "BRUSH_NEGATIVE_LIMIT", "bounding_region", "brush_disk", "chosen_token",
           "click_pixel", "clicks_satisfied", "component_at", "refine_locally"]
