"""NIfTI/NRRD/MHA volumes, their boxes as JSON, and label images out (CLI only; SimpleITK).

Boxes JSON::

    {"coordinates": "voxel",
     "boxes": [{"min": [x, y, z], "max": [x, y, z], "name": "liver"}, ...]}

- "voxel": voxel indices in SimpleITK order, x = column (index 0), y = row (index 1), z = slice (index 2);
  integers are voxel centres and both ends are included, as in the challenge's boxes.
- "physical": LPS millimetres, the world coordinates of ITK/SimpleITK (Slicer shows RAS: negate x and y).
  The axis-aligned physical box spanned by min and max is mapped to voxel indices through the image's
  origin, spacing and direction, and its voxel bounding box is used, so flipped or oblique images work.
- "name" is optional. Box i gets label i + 1 in the output; later boxes overwrite earlier ones.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Tuple

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_write
from .errors import QMedSAMError
from .validation import validate_boxes_3d

COORDINATE_KINDS = ("voxel", "physical")
BOX_KEYS = ("min", "max", "name")


def read_volume(path) -> sitk.Image:
    """A 3D scalar image; a 2D image becomes a single-slice volume."""
    path = Path(path)
    if not path.is_file():
        raise QMedSAMError(f"Input volume {path} does not exist or is not a file.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise QMedSAMError(f"Cannot read {path} as a NIfTI/NRRD/MHA image ({detail}).") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise QMedSAMError(f"{path} has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour or "
                           "vector image); convert it to a single-channel (grey) volume first.")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise QMedSAMError(f"{path} is a {image.GetDimension()}D image of size {image.GetSize()}; expected "
                           "a 3D volume (extract one time point or channel of a 4D series first).")
    return image


def volume_array(image: sitk.Image) -> np.ndarray:
    """The voxels as a (D, H, W) numpy array (a copy, so the image can be released)."""
    return sitk.GetArrayFromImage(image)


JSON_FORMAT = ('{"coordinates": "voxel" | "physical", '
               '"boxes": [{"min": [x, y, z], "max": [x, y, z], "name": "..."}]}')


def _fail(path: Path, where: str, problem: str):
    raise QMedSAMError(f"Boxes file {path}, at {where}: {problem}. Expected {JSON_FORMAT}.")


def _point(value, path: Path, where: str) -> list:
    if not isinstance(value, list) or len(value) != 3:
        _fail(path, where, f"expected a list of 3 numbers [x, y, z], got {json.dumps(value)}")
    for axis, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            _fail(path, f"{where}[{axis}]", f"expected a finite number, got {json.dumps(number)}")
    return [float(v) for v in value]


def _parse_boxes_json(path: Path) -> Tuple[str, list]:
    """(coordinate kind, [(min, max), ...]) with every structural problem reported by its JSON path."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QMedSAMError(f"Boxes file {path} does not exist; check the path.") from None
    except IsADirectoryError:
        raise QMedSAMError(f"Boxes file {path} is a folder; give the JSON file.") from None
    except OSError as error:
        raise QMedSAMError(f"Cannot read boxes file {path} ({error.strerror}).") from None
    except UnicodeDecodeError:
        raise QMedSAMError(f"Boxes file {path} is not UTF-8 text; save it as JSON.") from None
    except json.JSONDecodeError as error:
        raise QMedSAMError(f"Boxes file {path} is not valid JSON: {error.msg} at line {error.lineno}, "
                           f"column {error.colno}.") from None
    if not isinstance(document, dict):
        _fail(path, "$", "expected an object")
    kind = document.get("coordinates")
    if kind not in COORDINATE_KINDS:
        _fail(path, "$.coordinates", f"expected \"voxel\" or \"physical\", got {json.dumps(kind)}")
    entries = document.get("boxes")
    if not isinstance(entries, list):
        _fail(path, "$.boxes", f"expected a list of boxes, got {json.dumps(entries)}")
    if not entries:
        _fail(path, "$.boxes", "no boxes; give at least one")
    corners = []
    for index, entry in enumerate(entries):
        where = f"$.boxes[{index}]"
        if not isinstance(entry, dict):
            _fail(path, where, f"expected an object with \"min\" and \"max\", got {json.dumps(entry)}")
        unknown = sorted(set(entry) - set(BOX_KEYS))
        if unknown:
            _fail(path, where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(BOX_KEYS)}")
        if "name" in entry and not isinstance(entry["name"], str):
            _fail(path, f"{where}.name", f"expected text, got {json.dumps(entry['name'])}")
        corners.append(tuple(_point(entry.get(key), path, f"{where}.{key}") for key in ("min", "max")))
    return kind, corners


def _physical_to_index(low: list, high: list, image: sitk.Image) -> list:
    """Voxel bounding box [x_min, y_min, z_min, x_max, y_max, z_max] of a physical box's 8 corners."""
    points = [image.TransformPhysicalPointToContinuousIndex(corner)
              for corner in itertools.product(*zip(low, high))]
    points = np.asarray(points)
    return [*points.min(axis=0), *points.max(axis=0)]


def read_boxes_json(path, image: sitk.Image) -> np.ndarray:
    """(N, 6) validated voxel boxes x_min, y_min, z_min, x_max, y_max, z_max for `image` (see module doc)."""
    path = Path(path)
    kind, corners = _parse_boxes_json(path)
    if kind == "voxel":
        boxes = [[*low, *high] for low, high in corners]
    else:
        boxes = [_physical_to_index(low, high, image) for low, high in corners]
    width, height, depth = image.GetSize()
    try:
        return validate_boxes_3d(np.asarray(boxes, np.float64), (depth, height, width))
    except QMedSAMError as error:
        raise QMedSAMError(f"Boxes file {path} ({kind} coordinates): {error}") from None


def write_label_image(path, labels: np.ndarray, reference: sitk.Image, overwrite: bool = False) -> None:
    """Write (D, H, W) uint8 labels with the reference's origin, spacing and direction, atomically."""
    labels = np.asarray(labels)
    expected = tuple(reversed(reference.GetSize()))
    if labels.dtype != np.uint8 or labels.shape != expected:
        raise QMedSAMError(f"Labels of {labels.dtype} {labels.shape} do not fit the reference volume; "
                           f"expected uint8 {expected}.")
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(reference)

    def write(temp: Path) -> None:
        try:
            sitk.WriteImage(label_image, str(temp), True)
        except RuntimeError as error:
            raise OSError(f"SimpleITK could not write it: {str(error).strip().splitlines()[-1]}") from None

    atomic_write(Path(path), write, overwrite)
