"""Volumes in and label images out with SimpleITK's geometry, and the boxes given for them as JSON (CLI only).

FORMATS, the one table, picks a file's reader and writer by its suffix: NIfTI through nibabel and NRRD through
pynrrd (both light, in the main job's install), MetaImage (.mha/.mhd) through SimpleITK, which is optional.
Whatever reads a file, its geometry is what SimpleITK (ITK 5.4) gives: LPS millimetres (NIfTI stores RAS),
(x, y, z) order, the NIfTI qform or sform chosen as ITK chooses it; Testing/test_volume_io.py reads and writes
the same volumes both ways and compares.

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
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Tuple

import numpy as np

from .atomic import atomic_write
from .errors import QMedSAMError
from .validation import validate_boxes_3d

COORDINATE_KINDS = ("voxel", "physical")
BOX_KEYS = ("min", "max", "name")


@dataclass(frozen=True, eq=False)
class Volume:
    """(D, H, W) voxels and where they lie, as SimpleITK describes an image: spacing (mm) and origin (LPS mm)
    in (x, y, z) order, and a 3x3 direction whose column i is the LPS unit vector of voxel axis i."""

    array: np.ndarray
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: np.ndarray

    @property
    def size(self) -> Tuple[int, int, int]:
        """Voxels along x, y, z (SimpleITK's GetSize())."""
        depth, height, width = self.array.shape
        return width, height, depth

    def index_to_physical(self, index) -> np.ndarray:
        """LPS point of a continuous voxel index (x, y, z)."""
        return np.asarray(self.origin) + (self.direction * self.spacing) @ np.asarray(index, np.float64)

    def physical_to_index(self, point) -> np.ndarray:
        """Continuous voxel index (x, y, z) of an LPS point."""
        offset = np.asarray(point, np.float64) - self.origin
        return np.linalg.solve(self.direction * self.spacing, offset)


def _fail_read(path: Path, kind: str, error: BaseException):
    detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    raise QMedSAMError(f"Cannot read {path} as a {kind} image ({detail}).") from None


def _check_scalar_2d_or_3d(path: Path, size: tuple, components: int) -> None:
    """Refuse what the engine cannot segment before its voxels are read; `size` in (x, y, z) order."""
    if components != 1:
        raise QMedSAMError(f"{path} has {components} values per voxel (colour or vector image); convert it to a "
                           "single-channel (grey) volume first.")
    if len(size) not in (2, 3):
        raise QMedSAMError(f"{path} is a {len(size)}D image of size {tuple(size)}; expected a 3D volume "
                           "(extract one time point or channel of a 4D series first).")


def _volume(array: np.ndarray, spacing, origin, direction) -> Volume:
    """A Volume from a 2D or 3D image; a 2D image becomes one slice as SimpleITK's JoinSeries makes it
    (z spacing 1, z origin 0). Negative spacing flips its axis, as ITK's ImageFileReader does."""
    array = array.astype(array.dtype.newbyteorder("="), copy=False)  # big-endian files: native order
    spacing, origin, direction = list(spacing), list(origin), np.array(direction, np.float64)
    if array.ndim == 2:
        array, spacing, origin = array[np.newaxis], spacing + [1.0], origin + [0.0]
        direction = np.pad(direction, ((0, 1), (0, 1)))
        direction[2, 2] = 1.0
    for axis, step in enumerate(spacing):
        if step < 0:
            spacing[axis], direction[:, axis] = -step, 0.0 - direction[:, axis]
    return Volume(np.ascontiguousarray(array), tuple(float(v) for v in spacing), tuple(float(v) for v in origin),
                  direction)


# ---------------------------------------------------------------- NIfTI (nibabel)

_NIFTI_MM_PER_UNIT = {1: 1e3, 2: 1.0, 3: 1e-3}  # xyzt_units & 7: metre, mm, micron (ITK's spacing scale)
_NIFTI_COMPONENT_INTENTS = (1005, 1007)  # symmetric matrix, vector: dim[5] holds the values per voxel
_NIFTI_DATATYPE_COMPONENTS = {32: 2, 128: 3, 1792: 2, 2304: 4}  # complex64, RGB24, complex128, RGBA32
_LPS_FROM_RAS = np.array([-1.0, -1.0, 1.0])


def _nifti_qform(header) -> np.ndarray:
    """qto_xyz from the quaternion, pixdim and qoffset as niftilib computes it (in double, kept in single
    precision): ITK reads this matrix."""
    b, c, d = (float(header[key]) for key in ("quatern_b", "quatern_c", "quatern_d"))
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:
        norm = 1.0 / math.sqrt(b * b + c * c + d * d)
        a, b, c, d = 0.0, b * norm, c * norm, d * norm
    else:
        a = math.sqrt(a)
    pixdim = [float(v) for v in header["pixdim"][:4]]
    steps = [v if v > 0 else 1.0 for v in pixdim[1:4]]
    if pixdim[0] < 0:  # qfac
        steps[2] = -steps[2]
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * steps
    matrix[:3, 3] = [float(header[key]) for key in ("qoffset_x", "qoffset_y", "qoffset_z")]
    return matrix.astype(np.float32)


def _unit_columns(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=0)
    return matrix / np.where(norms == 0, 1, norms)


def _nifti_world_matrix(header):
    """The voxel-to-RAS matrix ITK 5.4's NiftiImageIO takes (measured against SimpleITK 2.5 for every pair of
    qform/sform codes): the sform where it is a scaled rotation labelled scanner-anatomical or where no qform is
    set, else the qform; None when neither is set (origin 0, identity directions)."""
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode == 0 and scode == 0:
        return None
    qform = _nifti_qform(header)
    sform = np.zeros((4, 4), np.float32)
    sform[3, 3] = 1.0
    if scode != 0:  # niftilib leaves the rows of an unlabelled sform at zero
        sform[:3] = [header[key] for key in ("srow_x", "srow_y", "srow_z")]
    prefer_sform = (np.abs(sform[:3, :3] - qform[:3, :3]).max() <= 1e-5
                    and np.abs(sform[:, 3] - qform[:, 3]).sum() <= 1e-7)
    if scode != 0:
        rotation = _unit_columns(sform[:3, :3].astype(np.float64))
        if np.abs(rotation @ rotation.T - np.eye(3)).max() <= 1e-4:  # no shear: a direction matrix can hold it
            prefer_sform = qcode == 0 or scode == 1
    if prefer_sform:
        return sform
    if qcode != 0:
        return qform
    raise ValueError("its sform is not a rotation with spacing and it has no qform; ITK cannot place it")


def _read_nifti(path: Path) -> Volume:
    import nibabel

    try:
        image = nibabel.load(str(path))
        header = image.header
        if not hasattr(header, "get_qform"):
            raise ValueError(f"it is a {type(image).__name__}, not NIfTI")
        dim = [int(v) for v in header["dim"]]
        if int(header["intent_code"]) in _NIFTI_COMPONENT_INTENTS:
            ndim = next((n for n in (4, 3, 2) if dim[n] > 1), 1)
            components = dim[5]
        else:
            ndim = dim[0]
            while ndim > 3 and dim[ndim] == 1:  # ITK drops trailing single time points and the like
                ndim -= 1
            components = 1
        components = _NIFTI_DATATYPE_COMPONENTS.get(int(header["datatype"]), components)
        _check_scalar_2d_or_3d(path, tuple(dim[1:ndim + 1]), components)
        raw = np.asanyarray(image.dataobj.get_unscaled())
        matrix = _nifti_world_matrix(header)
    except (nibabel.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error) as error:
        _fail_read(path, "NIfTI", error)
    array = raw.reshape(raw.shape[:ndim]).T  # (x, y, z) -> (z, y, x)
    # nibabel moves scl_slope/scl_inter from the header into the data proxy (1 and 0 where unset, 0 or NaN).
    slope, intercept = float(image.dataobj.slope), float(image.dataobj.inter)
    if slope != 1.0 or intercept != 0.0:  # ITK rescales integers to float32, floats in their own type
        kind = np.float32 if array.dtype.kind in "iub" else array.dtype
        array = (array.astype(np.float64) * slope + intercept).astype(kind)
    scale = _NIFTI_MM_PER_UNIT.get(int(header["xyzt_units"]) & 7, 1.0)
    spacing = [float(v) * scale for v in header["pixdim"][1:ndim + 1]]
    if matrix is None:
        return _volume(array, spacing, [0.0] * ndim, np.eye(ndim))
    lps = matrix[:3].astype(np.float64) * _LPS_FROM_RAS[:, None]
    return _volume(array, spacing, lps[:ndim, 3] * scale, _unit_columns(lps[:ndim, :ndim]))


def _write_nifti(path: Path, volume: Volume) -> None:
    """As SimpleITK writes NIfTI: qform and sform both scanner-anatomical, mm, no intensity scaling."""
    import nibabel

    affine = np.eye(4)
    affine[:3, :3] = volume.direction * volume.spacing * _LPS_FROM_RAS[:, None]
    affine[:3, 3] = np.asarray(volume.origin) * _LPS_FROM_RAS
    image = nibabel.Nifti1Image(volume.array.T, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_zooms(volume.spacing)  # pixdim is ITK's spacing, not the float32 matrix's column norms
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_slope_inter(1.0, 0.0)
    nibabel.save(image, str(path))


# ---------------------------------------------------------------- NRRD (pynrrd)

_NRRD_DOMAIN_KINDS = ("domain", "space", "time", "???", "none")  # the others (vector, RGB-color...) are values
_NRRD_LPS_FROM = {"right-anterior-superior": (-1.0, -1.0, 1.0), "RAS": (-1.0, -1.0, 1.0),
                  "left-anterior-superior": (1.0, -1.0, 1.0), "LAS": (1.0, -1.0, 1.0)}


def _read_nrrd(path: Path) -> Volume:
    import nrrd

    try:
        raw, header = nrrd.read(str(path), index_order="C")
    except (nrrd.NRRDError, OSError, EOFError, ValueError, zlib.error) as error:
        _fail_read(path, "NRRD", error)
    sizes = [int(v) for v in header["sizes"]]
    kinds = header.get("kinds", ["domain"] * len(sizes))
    domain = [axis for axis, kind in enumerate(kinds) if kind in _NRRD_DOMAIN_KINDS]
    values = [sizes[axis] for axis, kind in enumerate(kinds) if kind not in _NRRD_DOMAIN_KINDS]
    _check_scalar_2d_or_3d(path, tuple(sizes[axis] for axis in domain), int(np.prod(values)))
    ndim = len(domain)
    array = raw.reshape([sizes[axis] for axis in reversed(domain)])
    if "space directions" in header:
        columns = np.array([header["space directions"][axis] for axis in domain], np.float64).T
        if len(columns) != ndim:
            _fail_read(path, "NRRD", ValueError(f"{ndim} image axes in a {len(columns)}D space, which ITK refuses"))
        flip = np.array(_NRRD_LPS_FROM.get(header.get("space", ""), (1.0, 1.0, 1.0)))[:ndim, None]
        columns = columns * flip
        spacing = np.linalg.norm(columns, axis=0)
        origin = np.asarray(header.get("space origin", np.zeros(ndim)), np.float64) * flip[:, 0]
        return _volume(array, spacing, origin, columns * (1.0 / spacing))  # ITK's rounding: times the reciprocal
    spacings = header.get("spacings", [1.0] * len(sizes))
    spacing = [float(spacings[axis]) if math.isfinite(spacings[axis]) else 1.0 for axis in domain]
    return _volume(array, spacing, [0.0] * ndim, np.eye(ndim))


def _write_nrrd(path: Path, volume: Volume) -> None:
    import nrrd

    header = {"space": "left-posterior-superior", "kinds": ["domain"] * 3, "encoding": "gzip",
              "space directions": (volume.direction * volume.spacing).T, "space origin": np.asarray(volume.origin)}
    nrrd.write(str(path), volume.array, header, index_order="C")


# ---------------------------------------------------------------- other formats (SimpleITK, optional)


def _read_with_simpleitk(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        _check_scalar_2d_or_3d(path, reader.GetSize(), reader.GetNumberOfComponents())
        image = reader.Execute()
    except RuntimeError as error:
        _fail_read(path, "SimpleITK", error)
    ndim = image.GetDimension()
    return _volume(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(),
                   np.reshape(image.GetDirection(), (ndim, ndim)))


def _write_with_simpleitk(path: Path, volume: Volume) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction.ravel().tolist())
    try:
        sitk.WriteImage(image, str(path), True)
    except RuntimeError as error:
        raise OSError(f"SimpleITK could not write it: {str(error).strip().splitlines()[-1]}") from None


@dataclass(frozen=True)
class _Format:
    suffixes: Tuple[str, ...]
    package: str  # the pip name, for the error when it is missing
    module: str
    read: Callable[[Path], Volume]
    write: Callable[[Path, Volume], None]


# Suffix -> reader and writer; the last row also takes every suffix the others do not name.
FORMATS = (
    _Format((".nii", ".nii.gz"), "nibabel", "nibabel", _read_nifti, _write_nifti),
    _Format((".nrrd", ".nhdr"), "pynrrd", "nrrd", _read_nrrd, _write_nrrd),
    _Format((".mha", ".mhd"), "SimpleITK", "SimpleITK", _read_with_simpleitk, _write_with_simpleitk),
)
VOLUME_SUFFIXES = tuple(suffix for volume_format in FORMATS for suffix in volume_format.suffixes)


def _format_of(path: Path) -> _Format:
    """The row of FORMATS for `path`'s suffix, with its package importable."""
    name = path.name.lower()
    volume_format = next((f for f in FORMATS if name.endswith(f.suffixes)), FORMATS[-1])
    try:
        __import__(volume_format.module)
    except ImportError:
        raise QMedSAMError(f"Files like {path.name} need the {volume_format.package} package: "
                           f"pip install {volume_format.package}") from None
    return volume_format


def read_volume(path) -> Volume:
    """A 3D scalar image; a 2D image becomes a single-slice volume."""
    path = Path(path)
    if not path.is_file():
        raise QMedSAMError(f"Input volume {path} does not exist or is not a file.")
    return _format_of(path).read(path)


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


def _physical_to_index(low: list, high: list, volume: Volume) -> list:
    """Voxel bounding box [x_min, y_min, z_min, x_max, y_max, z_max] of a physical box's 8 corners."""
    points = np.asarray([volume.physical_to_index(corner) for corner in itertools.product(*zip(low, high))])
    return [*points.min(axis=0), *points.max(axis=0)]


def read_boxes_json(path, volume: Volume) -> np.ndarray:
    """(N, 6) validated voxel boxes x_min, y_min, z_min, x_max, y_max, z_max for `volume` (see module doc)."""
    path = Path(path)
    kind, corners = _parse_boxes_json(path)
    if kind == "voxel":
        boxes = [[*low, *high] for low, high in corners]
    else:
        boxes = [_physical_to_index(low, high, volume) for low, high in corners]
    width, height, depth = volume.size
    try:
        return validate_boxes_3d(np.asarray(boxes, np.float64), (depth, height, width))
    except QMedSAMError as error:
        raise QMedSAMError(f"Boxes file {path} ({kind} coordinates): {error}") from None


def write_label_image(path, labels: np.ndarray, reference: Volume, overwrite: bool = False) -> None:
    """Write (D, H, W) uint8 labels with the reference's origin, spacing and direction, atomically; the format
    follows the suffix (FORMATS)."""
    path = Path(path)
    labels = np.asarray(labels)
    if labels.dtype != np.uint8 or labels.shape != reference.array.shape:
        raise QMedSAMError(f"Labels of {labels.dtype} {labels.shape} do not fit the reference volume; "
                           f"expected uint8 {reference.array.shape}.")
    label_volume = Volume(labels, reference.spacing, reference.origin, reference.direction)
    write = _format_of(path).write
    atomic_write(path, lambda temp: write(temp, label_volume), overwrite)
