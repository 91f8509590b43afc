"""Slicer glue (SegmentEditorEffect.py) and the Slicer-free decisions it delegates to (every other module)."""
