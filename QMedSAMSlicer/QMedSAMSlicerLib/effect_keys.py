"""The effect's keys and the help text that names them.

The Segment Editor widget installs its own shortcuts on the slice views (qMRMLSegmentEditorWidget::
installKeyboardShortcuts): Escape deactivates the active effect, Space toggles it, the digits 0-9 (and
Shift+digit) select effects, z/y and Ctrl+Z/Ctrl+Y undo and redo. Those keys never reach an effect, so the
effect's own keys avoid them. Escape still does something sensible: leaving the effect discards the preview.
"""

from __future__ import annotations

APPLY = "apply"
CANCEL = "cancel"
DROP_LAST = "drop_last"  # the last prompt: the last box's last click, or the last box

# VTK key symbols (vtkRenderWindowInteractor.GetKeySym) -> action
KEY_ACTIONS = {"Return": APPLY, "KP_Enter": APPLY, "a": APPLY, "c": CANCEL, "x": DROP_LAST}

EDITOR_SHORTCUT_KEYS = frozenset(["Escape", "space", "z", "y", "Z", "Y"] + [str(d) for d in range(10)])


def action_for_key(key_sym: str):
    return KEY_ACTIONS.get(key_sym)


def help_text() -> str:
    return ("<html>Segment with LiteMedSAM from a box, then refine it with clicks, on this computer's CPU."
            "<p><ul style='margin: 0'>"
            "<li><b>Left-drag</b> in a slice view: box around the structure; the result is previewed (masked by "
            "the editable area and intensity range, exactly as Apply writes it). More boxes add to the preview."
            "<li><b>Left-click</b> on the last box's slice: a positive point (include this); <b>Shift+left-click</b>:"
            " a negative point (exclude this). The <b>Clicks</b> option swaps the two (for trackpads). Points show "
            "green and red; the preview is updated after each click. Shift+drag still pans the view."
            "<li><b>x</b>: remove the last prompt (the last click, or the last box when it has none)."
            "<li><b>Apply</b> button, <b>Enter</b> or <b>a</b>: write the preview into the segment (Ctrl+Z undoes "
            "it). <b>Cancel</b> button or <b>c</b>: discard it. <b>Escape</b> leaves the effect, which also "
            "discards the preview."
            "<li><b>3D</b> mode propagates the box through &plusmn; N slices (auto: as deep as wide); a click on one "
            "of its slices refines that slice and propagation restarts from it. <b>Stop</b> ends a running 3D "
            "segmentation without changing anything."
            "</ul>")
