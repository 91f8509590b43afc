"""Challenge .npz cases in, `segs` .npz results out (CVPR 2024 MedSAM-on-Laptop format).

A case holds `imgs` ((H, W, 3) image for 2D, (D, H, W) volume for 3D) and `boxes` ((N, 4) for 2D,
(N, 6) for 3D), optionally `spacing`. Files are never unpickled.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

from .atomic import atomic_write
from .errors import QMedSAMError
from .validation import validate_boxes_2d, validate_boxes_3d, validate_image_2d, validate_spacing, validate_volume

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members / an empty zip
NPY_SIGNATURE = b"\x93NUMPY"


@dataclass
class Case:
    name: str
    kind: str  # "2D" or "3D"
    image: np.ndarray  # (H, W, 3) for 2D, (D, H, W) for 3D
    boxes: np.ndarray  # validated float64, (N, 4) for 2D, (N, 6) for 3D
    spacing: Optional[tuple] = None


def _check_is_npz_file(path: Path, subject: str, needs: str) -> None:
    if not path.exists():
        raise QMedSAMError(f"{subject} does not exist; check the path.")
    if path.is_dir():
        raise QMedSAMError(f"{subject} is a folder, not a .npz file; name the folder as an input instead "
                           "to process every .npz in it.")
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as error:
        raise QMedSAMError(f"Cannot read {path} ({error.strerror}); check its permissions.") from None
    if head.startswith(NPY_SIGNATURE):
        raise QMedSAMError(f"{subject} is a single-array .npy file, not an .npz; {needs}.")
    if not head.startswith(ZIP_SIGNATURES):
        raise QMedSAMError(f"{subject} is not a .npz (zip) file: it is corrupt or of another format; "
                           f"{needs}; re-create it with numpy.savez_compressed.")


def read_npz_arrays(path, keys: Iterable[str], optional: Iterable[str] = (), *, role: str = "",
                    needs: str = "a case needs 'imgs' and 'boxes'") -> dict:
    """The named arrays of an .npz, never unpickled: the one .npz reader of the engine, CLI and training.

    A missing file or required key, a pickled array or a corrupt file is a QMedSAMError naming the file
    (prefixed with `role`, e.g. "Ground truth") and ending with `needs`, what the file should hold.
    """
    path = Path(path)
    subject = f"{role or 'Input'} {path}"
    _check_is_npz_file(path, subject, needs)
    keys = list(keys)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in keys if key not in data.files]
            if missing:
                found = ", ".join(repr(k) for k in data.files) or "none"
                lacking = ", ".join(repr(k) for k in missing)
                raise QMedSAMError(f"{subject} lacks {lacking} (keys found: {found}); {needs}.")
            arrays = {}
            for key in [*keys, *(k for k in optional if k in data.files)]:
                try:
                    arrays[key] = data[key]
                except ValueError as error:
                    if "allow_pickle" not in str(error):
                        raise
                    raise QMedSAMError(f"{subject}: array {key!r} holds Python objects, which would need "
                                       "unpickling (unsafe, refused); save it as a numeric array.") from None
                if not isinstance(arrays[key], np.ndarray):  # numpy hands back non-.npy members as bytes
                    raise QMedSAMError(f"{subject}: {key!r} is not a numpy array; re-create the file with "
                                       "numpy.savez_compressed.")
            return arrays
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as error:
        raise QMedSAMError(f"{subject} is damaged or not a valid .npz ({error}); "
                           "re-create or re-download it.") from None


def _case_kind(image: np.ndarray, boxes: np.ndarray, path: Path) -> str:
    """2D or 3D from the boxes' width, checked against the image's dimensions."""
    if boxes.size == 0:
        raise QMedSAMError(f"{path}: 'boxes' is empty (shape {boxes.shape}); a case needs at least one box.")
    width = boxes.shape[-1] if boxes.ndim in (1, 2) else None
    volume_like = image.ndim == 3 and image.shape[-1] not in (1, 3)
    if width == 4:
        if volume_like:
            raise QMedSAMError(f"{path}: 'imgs' is a (D, H, W) volume {image.shape} but 'boxes' have "
                               "4 columns (2D boxes); a 3D case needs 6: "
                               "x_min, y_min, z_min, x_max, y_max, z_max.")
        return "2D"
    if width == 6:
        if not volume_like:
            raise QMedSAMError(f"{path}: 'imgs' is a 2D image {image.shape} but 'boxes' have 6 columns "
                               "(3D boxes); a 2D case needs 4: x_min, y_min, x_max, y_max.")
        return "3D"
    raise QMedSAMError(f"{path}: 'boxes' has shape {boxes.shape}; expected (N, 4) for a 2D case "
                       "or (N, 6) for a 3D case.")


def load_npz_case(path) -> Case:
    """Read and validate one challenge case; the name is the file name without .npz."""
    path = Path(path)
    arrays = read_npz_arrays(path, ["imgs", "boxes"], optional=["spacing"])
    image, boxes = arrays["imgs"], arrays["boxes"]
    try:
        kind = _case_kind(image, boxes, path)
        if kind == "2D":
            image = validate_image_2d(image)
            boxes = validate_boxes_2d(boxes, image.shape[:2])
        else:
            image = validate_volume(image)
            boxes = validate_boxes_3d(boxes, image.shape)
        spacing = arrays.get("spacing")
        if spacing is not None:  # (x, y, z) of a volume; a 2D image's own axes (unused by the engine)
            spacing = validate_spacing(spacing, axes=3 if kind == "3D" else np.asarray(spacing).size)
    except QMedSAMError as error:
        message = str(error)
        raise QMedSAMError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    return Case(name=path.stem, kind=kind, image=image, boxes=boxes, spacing=spacing)


def save_segs_npz(path, segs: np.ndarray, overwrite: bool = False) -> None:
    """Write `segs` (uint8 labels) compressed, atomically; an existing file needs overwrite=True."""
    segs = np.asarray(segs)
    if segs.dtype != np.uint8:
        raise QMedSAMError(f"Segmentation to save has dtype {segs.dtype}; expected uint8 labels.")

    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:  # a handle, so numpy does not append .npz to the name
            np.savez_compressed(handle, segs=segs)

    atomic_write(Path(path), write, overwrite)


def npz_files_in(folder: Path) -> list:
    """The folder's .npz files, sorted (none if it is not a folder); hidden names are skipped: partial writes
    (.qmedsam-*) and macOS "._" resource files."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() == ".npz" and p.is_file() and not p.name.startswith("."))


def _npz_in_folder(folder: Path) -> list:
    found = npz_files_in(folder)
    if not found:
        hint = f" (did you mean {folder / 'imgs'}?)" if (folder / "imgs").is_dir() else ""
        raise QMedSAMError(f"Folder {folder} holds no .npz files{hint}.")
    return found


def find_npz_inputs(paths: Union[str, Path, Iterable[Union[str, Path]]]) -> list:
    """Files as given and the *.npz of folders (sorted), without duplicates."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found, seen = [], set()
    for path in map(Path, paths):
        if path.is_dir():
            candidates = _npz_in_folder(path)
        elif not path.exists():
            raise QMedSAMError(f"Input {path} does not exist; check the path.")
        elif path.suffix.lower() != ".npz":
            raise QMedSAMError(f"Input {path} is not a .npz file; inputs are challenge .npz files, "
                               "folders of them, or NIfTI/NRRD/MHA volumes.")
        else:
            candidates = [path]
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    if not found:
        raise QMedSAMError("No .npz inputs given; name challenge .npz files or folders holding them.")
    return found
