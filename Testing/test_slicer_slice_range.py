"""3D extent: auto (object as deep as the box is wide) or ± N slices, and the engine's (1, 6) box."""

import numpy as np
import pytest
import slicer_lib  # noqa: F401
from QMedSAMSlicerLib.slice_range import MAX_HALF_EXTENT, auto_half_extent, engine_box_3d, slice_range


def test_auto_extent_assumes_an_object_as_deep_as_wide():
    # 40 x 20 voxels of 0.8 mm -> 32 mm wide -> +-16 mm -> +-7 slices of 2.5 mm (rounded up)
    assert auto_half_extent(40, 20, (0.8, 0.8), 2.5) == 7
    assert auto_half_extent(3, 3, (0.5, 0.5), 5.0) == 1  # never less than one slice each side
    assert auto_half_extent(500, 500, (1.0, 1.0), 0.1) == MAX_HALF_EXTENT


def test_range_is_clipped_to_the_volume_and_knows_where_propagation_starts():
    inside = slice_range(10, 4, 30)
    assert (inside.first, inside.last, inside.count, inside.starts_on_drawn_slice) == (6, 14, 9, True)
    near_end = slice_range(2, 5, 30)
    assert (near_end.first, near_end.last) == (0, 7)
    assert not near_end.starts_on_drawn_slice  # engine starts from slice 3, documented
    assert slice_range(0, 0, 1).count == 1
    with pytest.raises(ValueError):
        slice_range(30, 2, 30)


def test_engine_box_is_relative_to_the_cropped_range():
    extent = slice_range(10, 3, 30)
    box = engine_box_3d((5, 6, 25, 30), extent)
    assert box.shape == (1, 6)
    assert np.array_equal(box[0], [5, 6, 0, 25, 30, 6])
    # the engine's middle slice of that range is the drawn slice (index 3 of 7 = slice 10)
    assert int((box[0, 5] - box[0, 2]) / 2 + box[0, 2]) + extent.first == 10
