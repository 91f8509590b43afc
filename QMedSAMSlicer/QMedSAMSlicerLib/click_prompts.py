"""Clicks that refine the last box: what a click is, its polarity, and the prompts each previewed box holds.

After a box, a left-click adds a positive point and Shift+left-click a negative one (the options panel's
Positive/Negative toggle swaps them, for trackpads). Slicer's own effects leave every modified left-button
gesture to the views, and Shift+left-drag pans a slice view; so a Shift+click is taken only on release, when
the mouse did not move, and Shift+drag still pans.

Each previewed box keeps its clicks in order and the result after each (`results[0]` is the box-only
result), so `x` pops the last click and shows the previous result as it was, without running the engine.
The engine gets all clicks of the box each time (SAM's prompt is the whole set, not a delta), through
`ClickBinding`, which lets effect_logic.run_engine_call run a box with clicks exactly as it runs a box.
Slicer-free.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from qmedsam.errors import QMedSAMError

from .box_geometry import SliceBox
from .effect_logic import EngineCall, PendingResult

CLICK_TOLERANCE_PIXELS = 2  # press and release this close: a click, not a drag (hand jitter on a trackpad)


class ClickError(QMedSAMError):
    """A click that cannot refine the last box (outside the image, on another slice or view); the message
    says what to do. Nothing was changed."""


def is_click(start_xy, end_xy) -> bool:
    return max(abs(end_xy[0] - start_xy[0]), abs(end_xy[1] - start_xy[1])) <= CLICK_TOLERANCE_PIXELS


def click_is_positive(negative_mode: bool, shift: bool) -> bool:
    """Shift gives the other polarity than the options panel's toggle."""
    return negative_mode == shift


@dataclass(frozen=True)
class Click:
    """A click on the engine image of a box's frame: `slice_index` along the frame's normal axis, `row` and
    `column` in the oriented image (the engine's y and x); `ras` is where the marker is drawn."""

    slice_index: int
    row: int
    column: int
    positive: bool
    ras: tuple


@dataclass
class PromptedBox:
    """One previewed box with its clicks; `results[n]` is the result after the first n clicks."""

    box: SliceBox
    call: EngineCall
    anchor_ijk: tuple  # the drag's centre on the view plane (mrml_source.view_centre_ijk): where it was drawn
    results: list
    clicks: list = field(default_factory=list)

    @property
    def result(self) -> PendingResult:
        return self.results[-1]

    def check_slice(self, click: Click) -> None:
        """Raises ClickError unless the click lies on a slice this box was segmented on."""
        if self.call.method == "segment_2d" and click.slice_index != self.box.slice_index:
            raise ClickError(f"The click is on another slice than the last box (slice {self.box.slice_index}); "
                             "go back to that slice to refine it, or drag a new box here.")
        if not self.call.first <= click.slice_index <= self.call.last:
            raise ClickError(f"The click is outside the last box's 3D range (slices {self.call.first}-"
                             f"{self.call.last}); click within it, or drag a new box here.")

    def add(self, click: Click, result: PendingResult) -> None:
        self.clicks.append(click)
        self.results.append(result)

    def drop_last_click(self) -> bool:
        """Removes the last click (its result too); False when the box has none."""
        if not self.clicks:
            return False
        self.clicks.pop()
        self.results.pop()
        return True


def takes_clicks(segmenter) -> bool:
    """Whether `segmenter.segment_2d` accepts clicks (the engine does; the self-test's stand-in does not)."""
    return "clicks" in inspect.signature(segmenter.segment_2d).parameters


class ClickBinding:
    """A segmenter whose segment_2d / segment_3d pass `clicks` (one box's) to the engine in its format:
    (x, y, positive) in image pixels for a slice, (x, y, z, positive) with z counted from `first` for a volume."""

    def __init__(self, segmenter, clicks, first: int):
        self.segmenter, self.clicks, self.first = segmenter, list(clicks), first

    def segment_2d(self, image, boxes):
        return self.segmenter.segment_2d(image, boxes, clicks=[[(c.column, c.row, c.positive) for c in self.clicks]])

    def segment_3d(self, volume, boxes, progress=None, cancel=None):
        clicks = [[(c.column, c.row, c.slice_index - self.first, c.positive) for c in self.clicks]]
        return self.segmenter.segment_3d(volume, boxes, clicks=clicks, progress=progress, cancel=cancel)


def click_counts(prompted: PromptedBox) -> str:
    positive = sum(click.positive for click in prompted.clicks)
    return f"{positive} positive, {len(prompted.clicks) - positive} negative click(s) on the last box"
