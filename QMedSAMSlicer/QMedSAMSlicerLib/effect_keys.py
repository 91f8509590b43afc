"""The effect's keys and the help text that names them.

The Segment Editor widget installs its own shortcuts on the slice views (qMRMLSegmentEditorWidget::
installKeyboardShortcuts): Escape deactivates the active effect, Space toggles it, the digits 0-9 (and
Shift+digit) select effects, z/y and Ctrl+Z/Ctrl+Y undo and redo. Those keys never reach an effect, so the
effect's own keys avoid them. Escape still does something sensible: leaving the effect discards the preview.
"""

from __future__ import annotations

APPLY = "apply"
CANCEL = "cancel"
DROP_LAST = "drop_last"

# VTK key symbols (vtkRenderWindowInteractor.GetKeySym) -> action
KEY_ACTIONS = {"Return": APPLY, "KP_Enter": APPLY, "a": APPLY, "c": CANCEL, "x": DROP_LAST}

EDITOR_SHORTCUT_KEYS = frozenset(["Escape", "space", "z", "y", "Z", "Y"] + [str(d) for d in range(10)])


def action_for_key(key_sym: str):
    return KEY_ACTIONS.get(key_sym)


def help_text() -> str:
    return ("<html>Segment with LiteMedSAM from a box, on this computer's CPU.<p><ul style='margin: 0'>"
            "<li><b>Left-drag</b> in a slice view: box around the structure; the result is previewed (masked by "
            "the editable area and intensity range, exactly as Apply writes it)."
            "<li>More boxes add to the preview. <b>x</b>: drop the last box."
            "<li><b>Apply</b> button, <b>Enter</b> or <b>a</b>: write the preview into the segment (Ctrl+Z undoes "
            "it). <b>Cancel</b> button or <b>c</b>: discard it. <b>Escape</b> leaves the effect, which also "
            "discards the preview."
            "<li><b>3D</b> mode propagates the box through &plusmn; N slices (auto: as deep as wide); <b>Stop</b> "
            "ends a running 3D segmentation without changing anything."
            "</ul>")
