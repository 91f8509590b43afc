"""Apply time and peak memory of a 3D box, full-volume labelmap (before) vs extent-limited labelmap (after).

    cd QMedSAMSlicer && ../.venv/bin/python -m QMedSAMSlicerLib.apply_benchmark

Runs on Slicer's own libraries (slicer-core): a 512 x 512 x 600 int16 source volume, a segmentation on its
grid, and one pending 3D result of +-40 slices (an ellipse of 120 x 90 voxels per slice, as the engine returns
it). Each variant runs in its own child process, so that one's memory does not hide the other's; the peak is
the growth of the process's resident set during Apply (Linux: VmHWM reset through /proc/self/clear_refs).
- before: the effect as it was: the mask painted into a (k, j, i) bool array of the whole grid, copied into a
  whole-grid uint8 labelmap, written through vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap;
- after: BoxEditor.apply: a labelmap over the mask's extent only, written through the same call.
No engine run: the result is synthetic; Apply does not depend on how the mask was found.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

SHAPE = (600, 512, 512)  # (k, j, i)
HALF_EXTENT = 40
VARIANTS = ("before", "after")


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM (peak resident set) to the current resident set


def _scene(shape):
    import slicer
    import vtk

    from .box_geometry import slice_frame
    from .effect_logic import PendingResult, PreviewSession, State, VolumeGeometry
    from .mrml_effect import BoxEditor
    from .mrml_scene import editing_scene
    from .mrml_source import grid_ras_to_index, image_array

    editing = editing_scene()
    volume = slicer.vtkMRMLScalarVolumeNode()
    editing.scene.AddNode(volume)
    image = vtk.vtkImageData()
    image.SetDimensions(shape[2], shape[1], shape[0])
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    image_array(image)[:] = 0  # touch every voxel: a loaded CT is resident
    volume.SetAndObserveImageData(image)
    volume.SetSpacing(0.8, 0.8, 1.0)
    segmentation = slicer.vtkMRMLSegmentationNode()
    editing.scene.AddNode(segmentation)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("target")
    editing.edit(segmentation, volume, segment_id)
    editor = BoxEditor(editing.access)
    reference = editing.access.reference_geometry()
    ras_to_index = grid_ras_to_index(reference, segmentation)
    frame = slice_frame(np.eye(4), ras_to_index)
    depth, rows, columns = frame.engine_shape(shape)
    yy, xx = np.ogrid[:rows, :columns]
    ellipse = (xx - columns / 2) ** 2 / 60 ** 2 + (yy - rows / 2) ** 2 / 45 ** 2 <= 1
    first = depth // 2 - HALF_EXTENT
    mask = np.repeat(ellipse[None], 2 * HALF_EXTENT + 1, axis=0)
    geometry = VolumeGeometry(shape, ras_to_index, volume.GetID())
    editor.session = PreviewSession(State.PREVIEW, [PendingResult(frame, first, mask, "bench", geometry)])
    return editing, editor, segmentation, segment_id, reference


def _apply_before(editing, editor, segmentation, segment_id, reference):
    """The Apply of the effect before the extent-limited labelmap (whole-grid arrays)."""
    import slicer
    import vtk

    from .mrml_source import image_array

    mask = editor.session.preview_mask(editor.geometry().shape)
    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetExtent(reference.GetExtent())
    matrix = vtk.vtkMatrix4x4()
    reference.GetImageToWorldMatrix(matrix)
    labelmap.SetImageToWorldMatrix(matrix)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image_array(labelmap)[..., 0] = np.ascontiguousarray(mask, np.uint8)
    labelmap.Modified()
    editing.access.save_state_for_undo()
    editing.access.add_to_segment(segmentation, segment_id, labelmap, reference.GetExtent())
    editor.session.finish()


def run_variant(variant: str, shape=SHAPE) -> dict:
    editing, editor, segmentation, segment_id, reference = _scene(shape)
    _reset_peak()
    baseline = _rss_mb("VmRSS")
    start = time.perf_counter()
    if variant == "before":
        _apply_before(editing, editor, segmentation, segment_id, reference)
    else:
        editor.apply()
    seconds = time.perf_counter() - start
    peak = _rss_mb("VmHWM") - baseline
    written = slicer_count(segmentation, segment_id)
    return {"variant": variant, "apply_s": round(seconds, 3), "peak_mb": round(peak, 1), "voxels": written}


def slicer_count(segmentation, segment_id) -> int:
    import slicer

    from .mrml_source import image_array

    image = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segment_id, image)
    return int(np.count_nonzero(image_array(image)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process (used internally)")
    parser.add_argument("--shape", type=int, nargs=3, default=SHAPE, metavar=("K", "J", "I"))
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args.variant, tuple(args.shape))))
        return 0
    k, j, i = args.shape
    print(f"Apply of a 3D box of +-{HALF_EXTENT} slices on a {i} x {j} x {k} volume (slicer-core, own process each):")
    results = []
    for variant in VARIANTS:
        command = [sys.executable, "-m", "QMedSAMSlicerLib.apply_benchmark", "--variant", variant, "--shape",
                   *map(str, args.shape)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    for result in results:
        label = "full-volume labelmap (before)" if result["variant"] == "before" else "extent-limited (after)"
        print(f"  {label:32s} Apply {result['apply_s']:7.3f} s   peak +{result['peak_mb']:7.1f} MB   "
              f"{result['voxels']} voxels written")
    if results[0]["voxels"] != results[1]["voxels"]:
        print("  MISMATCH: the two variants wrote different voxel counts")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
