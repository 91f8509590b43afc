"""Box from two mouse points in axial, sagittal, coronal and oblique views, with real vtkMatrix4x4."""

import numpy as np
import pytest
import slicer_lib  # noqa: F401
import vtk
from QMedSAMSlicerLib.box_geometry import (
    BoxError,
    as_matrix,
    box_from_drag,
    ras_to_xy,
    slice_frame,
    slice_index_at,
    voxel_spacing,
)

# Slicer's SliceToRAS orientation presets (columns: screen right, screen up, normal).
ORIENTATIONS = {
    "axial": [[-1, 0, 0], [0, 1, 0], [0, 0, 1]],
    "sagittal": [[0, 0, 1], [-1, 0, 0], [0, 1, 0]],
    "coronal": [[-1, 0, 0], [0, 0, 1], [0, 1, 0]],
}
SHAPE_KJI = (20, 64, 48)  # k slices, j rows, i columns
SPACING = (0.8, 0.7, 2.5)


def vtk_matrix(array) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


def ijk_to_ras(rotation_deg=0.0, rotation_axis=(1, 0, 0)) -> vtk.vtkMatrix4x4:
    """An LPS-stored volume as Slicer loads it (I toward -R, J toward -A), optionally rotated (oblique)."""
    transform = vtk.vtkTransform()
    transform.PostMultiply()
    transform.Scale(-SPACING[0], -SPACING[1], SPACING[2])
    transform.RotateWXYZ(rotation_deg, *rotation_axis)
    transform.Translate(12.0, -30.0, 5.0)
    return transform.GetMatrix()


def ras_to_ijk(ijk_to_ras_matrix) -> vtk.vtkMatrix4x4:
    inverse = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Invert(ijk_to_ras_matrix, inverse)
    return inverse


def xy_to_ras(orientation, centre_ras, mm_per_pixel=0.5) -> vtk.vtkMatrix4x4:
    """A slice view's XYToRAS: pixels scaled to mm, oriented by the preset, through centre_ras."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(ORIENTATIONS[orientation], float) * mm_per_pixel
    m[:3, 3] = np.asarray(centre_ras) - m[:3, :3] @ np.array([200.0, 150.0, 0.0])
    return vtk_matrix(m)


def ijk_point_to_xy(ijk, xy_to_ras_matrix, ras_to_ijk_matrix):
    xy_to_ijk = as_matrix(ras_to_ijk_matrix) @ as_matrix(xy_to_ras_matrix)
    xyz = np.linalg.inv(xy_to_ijk) @ np.array([*ijk, 1.0])
    return xyz[:2], xyz[2]


def ras_of_ijk(ijk, ijk_to_ras_matrix):
    return (as_matrix(ijk_to_ras_matrix) @ np.array([*ijk, 1.0]))[:3]


@pytest.mark.parametrize("orientation, normal, row, column, row_flip, column_flip", [
    ("axial", 2, 1, 0, False, False),      # screen right = patient left = +I; screen down = posterior = +J
    ("sagittal", 0, 2, 1, True, False),    # screen right = posterior = +J; screen down = inferior = -K
    ("coronal", 1, 2, 0, True, False),     # screen right = +I; screen down = -K
])
def test_slice_frame_matches_view_axes(orientation, normal, row, column, row_flip, column_flip):
    volume = ijk_to_ras()
    frame = slice_frame(xy_to_ras(orientation, (0, 0, 0)), ras_to_ijk(volume))
    assert (frame.normal_axis, frame.row_axis, frame.column_axis) == (normal, row, column)
    assert (frame.row_flip, frame.column_flip) == (row_flip, column_flip)
    assert frame.tilt_degrees == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal"])
def test_engine_image_is_what_the_view_shows(orientation):
    """Moving right on screen moves right in the engine image; moving down moves down; same voxel."""
    volume_matrix = ijk_to_ras()
    centre = ras_of_ijk((20, 30, 10), volume_matrix)
    view, inverse = xy_to_ras(orientation, centre), ras_to_ijk(volume_matrix)
    frame = slice_frame(view, inverse)
    volume = np.random.default_rng(0).integers(0, 1000, SHAPE_KJI)
    oriented = frame.to_engine(volume)
    xy_to_ijk = as_matrix(inverse) @ as_matrix(view)

    x, y = 200.0, 150.0
    ijk_here = np.floor((xy_to_ijk @ [x, y, 0, 1])[:3] + 0.5).astype(int)
    engine_slice = ijk_here[frame.normal_axis]
    rows, columns = oriented.shape[1:]
    r = rows - 1 - ijk_here[frame.row_axis] if frame.row_flip else ijk_here[frame.row_axis]
    c = columns - 1 - ijk_here[frame.column_axis] if frame.column_flip else ijk_here[frame.column_axis]
    assert oriented[engine_slice, r, c] == volume[ijk_here[2], ijk_here[1], ijk_here[0]]
    # 20 screen pixels right and 20 down (y decreases downward on screen) land right of and below (r, c).
    right = np.floor((xy_to_ijk @ [x + 20, y, 0, 1])[:3] + 0.5).astype(int)
    down = np.floor((xy_to_ijk @ [x, y - 20, 0, 1])[:3] + 0.5).astype(int)
    c_right = columns - 1 - right[frame.column_axis] if frame.column_flip else right[frame.column_axis]
    r_down = rows - 1 - down[frame.row_axis] if frame.row_flip else down[frame.row_axis]
    assert c_right > c and r_down > r
    assert np.array_equal(frame.from_engine(oriented), volume)


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal"])
def test_drag_between_two_voxels_gives_their_box_on_their_slice(orientation):
    volume_matrix = ijk_to_ras()
    inverse = ras_to_ijk(volume_matrix)
    low, high = np.array([10, 20, 6]), np.array([30, 45, 14])
    frame = slice_frame(xy_to_ras(orientation, (0, 0, 0)), inverse)
    low[frame.normal_axis] = high[frame.normal_axis] = 7  # both corners on one slice
    view = xy_to_ras(orientation, ras_of_ijk(low, volume_matrix))
    start, _ = ijk_point_to_xy(low, view, inverse)
    end, _ = ijk_point_to_xy(high, view, inverse)
    box = box_from_drag(end, start, view, inverse, SHAPE_KJI)  # either drag direction
    assert box.slice_index == 7
    rows, columns = frame.engine_shape(SHAPE_KJI)[1:]
    cols = sorted(columns - 1 - v if frame.column_flip else v for v in (low[frame.column_axis],
                                                                          high[frame.column_axis]))
    rws = sorted(rows - 1 - v if frame.row_flip else v for v in (low[frame.row_axis], high[frame.row_axis]))
    assert box.box == (cols[0], rws[0], cols[1], rws[1])


def test_oblique_volume_uses_nearest_voxel_slice_and_the_full_rotated_extent():
    volume_matrix = ijk_to_ras(rotation_deg=20.0, rotation_axis=(1, 0, 0))  # tilted about R: oblique axial
    inverse = ras_to_ijk(volume_matrix)
    centre_ijk = np.array([24.0, 32.0, 10.0])
    view = xy_to_ras("axial", ras_of_ijk(centre_ijk, volume_matrix))
    frame = slice_frame(view, inverse)
    assert frame.normal_axis == 2
    assert frame.tilt_degrees == pytest.approx(20.0, abs=1e-6)
    centre_xy, _ = ijk_point_to_xy(centre_ijk, view, inverse)
    box = box_from_drag(centre_xy - 20, centre_xy + 20, view, inverse, SHAPE_KJI)
    assert box.slice_index == 10
    # Every screen corner's voxel lies inside the box: the box is the IJK bounding box of the corners.
    xy_to_ijk = as_matrix(inverse) @ as_matrix(view)
    for dx in (-20, 20):
        for dy in (-20, 20):
            ijk = (xy_to_ijk @ [centre_xy[0] + dx, centre_xy[1] + dy, 0, 1])[:3]
            assert box.box[0] - 1 <= ijk[0] <= box.box[2] + 1 and box.box[1] - 1 <= ijk[1] <= box.box[3] + 1


def test_oblique_about_the_normal_keeps_the_slice_axis():
    volume_matrix = ijk_to_ras(rotation_deg=35.0, rotation_axis=(0, 0, 1))
    frame = slice_frame(xy_to_ras("axial", (0, 0, 0)), ras_to_ijk(volume_matrix))
    assert frame.normal_axis == 2 and frame.tilt_degrees == pytest.approx(0, abs=1e-6)
    assert {frame.row_axis, frame.column_axis} == {0, 1}


def test_tiny_box_is_rejected_with_a_clear_message():
    volume_matrix = ijk_to_ras()
    inverse = ras_to_ijk(volume_matrix)
    view = xy_to_ras("axial", ras_of_ijk((20, 30, 10), volume_matrix))
    with pytest.raises(BoxError, match="only .* voxels"):
        box_from_drag((200, 150), (201, 151), view, inverse, SHAPE_KJI)


def test_box_outside_the_volume_is_rejected_and_partial_box_is_clipped():
    volume_matrix = ijk_to_ras()
    inverse = ras_to_ijk(volume_matrix)
    view = xy_to_ras("axial", ras_of_ijk((0, 0, 10), volume_matrix))
    start, _ = ijk_point_to_xy((-10, -10, 10), view, inverse)
    end, _ = ijk_point_to_xy((8, 9, 10), view, inverse)
    assert box_from_drag(start, end, view, inverse, SHAPE_KJI).box == (0, 0, 8, 9)
    far, _ = ijk_point_to_xy((-30, -30, 10), view, inverse)
    with pytest.raises(BoxError, match="outside"):
        box_from_drag(far, start, view, inverse, SHAPE_KJI)
    above = xy_to_ras("axial", ras_of_ijk((20, 30, 40), volume_matrix))
    with pytest.raises(BoxError, match="outside the volume"):
        box_from_drag((180, 130), (220, 170), above, inverse, SHAPE_KJI)


def test_slice_under_the_mouse_and_spacing():
    volume_matrix = ijk_to_ras()
    inverse = ras_to_ijk(volume_matrix)
    view = xy_to_ras("axial", ras_of_ijk((20, 30, 12), volume_matrix))
    frame = slice_frame(view, inverse)
    assert slice_index_at((200, 150), view, inverse, frame, SHAPE_KJI) == 12
    assert slice_index_at((200, 150), xy_to_ras("axial", ras_of_ijk((20, 30, 99), volume_matrix)), inverse,
                          frame, SHAPE_KJI) is None
    assert voxel_spacing(inverse) == pytest.approx(SPACING)


def slice_node_xy_to_ras(orientation, centre_ras, dimensions=(640, 480), field_of_view_x=160.0,
                         slice_spacing=1.0) -> vtk.vtkMatrix4x4:
    """XYToRAS as vtkMRMLSliceNode::UpdateMatrices builds it: SliceToRAS (preset, through centre_ras, as after
    JumpSliceByCentering) times XYToSlice (pixel size FOV / dimensions, origin at the view's centre)."""
    slice_to_ras = np.eye(4)
    slice_to_ras[:3, :3] = ORIENTATIONS[orientation]
    slice_to_ras[:3, 3] = centre_ras
    field_of_view = (field_of_view_x, field_of_view_x * dimensions[1] / dimensions[0], slice_spacing)
    xy_to_slice = vtk.vtkMatrix4x4()
    for axis, size in enumerate((*dimensions, 1)):
        xy_to_slice.SetElement(axis, axis, field_of_view[axis] / size)
        xy_to_slice.SetElement(axis, 3, -field_of_view[axis] / 2.0 if axis < 2 else 0.0)
    xy_to_ras = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(vtk_matrix(slice_to_ras), xy_to_slice, xy_to_ras)
    return xy_to_ras


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal"])
def test_ras_to_xy_inverts_the_slice_nodes_xy_to_ras(orientation):
    view = slice_node_xy_to_ras(orientation, (12.5, -40.0, 7.0))
    ras_to_xy_vtk = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Invert(view, ras_to_xy_vtk)
    points = np.array([[12.5, -40.0, 7.0], [30.0, 2.0, -11.0], [-80.0, 95.5, 40.25]])
    xyz = ras_to_xy(points, view)
    assert xyz.shape == (3, 3)
    for point, ours in zip(points, xyz):
        assert ours == pytest.approx(ras_to_xy_vtk.MultiplyPoint([*point, 1.0])[:3], abs=1e-9)
        assert view.MultiplyPoint([*ours, 1.0])[:3] == pytest.approx(point, abs=1e-9)  # round trip
    assert ras_to_xy(points[0], view) == pytest.approx([320.0, 240.0, 0.0])  # the centre is mid-view, on-plane


def test_ras_to_xy_projects_off_plane_points_along_the_normal():
    view = slice_node_xy_to_ras("axial", (0.0, 0.0, 5.0), slice_spacing=2.0)
    on_plane, above = ras_to_xy([[10.0, 20.0, 5.0], [10.0, 20.0, 11.0]], view)
    assert above[:2] == pytest.approx(on_plane[:2]) and on_plane[2] == pytest.approx(0.0)
    assert above[2] == pytest.approx(3.0)  # 6 mm above, in 2 mm slice steps
    with pytest.raises(ValueError, match="shape"):
        ras_to_xy([1.0, 2.0], view)


@pytest.mark.parametrize("orientation, rotation_deg", [("axial", 0.0), ("sagittal", 0.0), ("coronal", 0.0),
                                                       ("axial", 12.0)])
def test_box_between_the_xy_of_two_ras_corners_holds_their_voxels(orientation, rotation_deg):
    """What the self-test does: corners given in RAS, the view's XY from ras_to_xy, rounded to whole pixels as a
    mouse event is, then box_from_drag: the corners' slice, and their voxels as the box's opposite corners
    (or inside the box when the grid is turned in the view: the box bounds the turned screen rectangle)."""
    volume_matrix = ijk_to_ras(rotation_deg, rotation_axis=(0, 0, 1))
    inverse = ras_to_ijk(volume_matrix)
    low, high = np.array([10.0, 20.0, 3.0]), np.array([30.0, 45.0, 15.0])
    frame = slice_frame(slice_node_xy_to_ras(orientation, (0, 0, 0)), inverse)
    low[frame.normal_axis] = high[frame.normal_axis] = 7.0
    view = slice_node_xy_to_ras(orientation, ras_of_ijk((low + high) / 2, volume_matrix), field_of_view_x=64.0)
    start, end = (np.rint(xyz[:2]) for xyz in ras_to_xy([ras_of_ijk(low, volume_matrix),
                                                         ras_of_ijk(high, volume_matrix)], view))
    box = box_from_drag(start, end, view, inverse, SHAPE_KJI)
    assert box.slice_index == 7
    rows, columns = frame.engine_shape(SHAPE_KJI)[1:]
    cols = sorted(columns - 1 - v if frame.column_flip else v for v in (low[frame.column_axis],
                                                                          high[frame.column_axis]))
    rws = sorted(rows - 1 - v if frame.row_flip else v for v in (low[frame.row_axis], high[frame.row_axis]))
    if rotation_deg == 0.0:
        assert np.abs(np.subtract(box.box, (cols[0], rws[0], cols[1], rws[1]))).max() <= 1  # pixel rounding
    else:
        assert box.box[0] <= cols[0] + 1 and box.box[1] <= rws[0] + 1
        assert box.box[2] >= cols[1] - 1 and box.box[3] >= rws[1] - 1
