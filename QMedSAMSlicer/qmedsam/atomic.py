"""Writing outputs so that a reader never sees a partial file and nothing is replaced by accident."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

from .errors import QMedSAMError


def _missing_folder_message(path: Path) -> str:
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"Cannot write {path}: {ancestor} is a file, not a folder; choose another output path."
            break
    return (f"Cannot write {path}: folder {path.parent} does not exist; create it or choose another "
            "output path.")


def check_writable_target(path, overwrite: bool = False) -> Path:
    """Fail now, before any work, if `path` cannot be written (or exists and `overwrite` is False)."""
    path = Path(path)
    if path.is_dir():
        raise QMedSAMError(f"Output {path} is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise QMedSAMError(f"Output {path} already exists; pass --overwrite to replace it.")
    if not path.parent.is_dir():
        raise QMedSAMError(_missing_folder_message(path))
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise QMedSAMError(f"Cannot write {path}: no permission to write in {path.parent}; "
                           "choose another folder.")
    return path


def atomic_write(path, write_fn: Callable[[Path], object], overwrite: bool = False) -> None:
    """Call `write_fn(temp)` on a temporary file beside `path`, then move it into place in one step.

    The temporary name ends with the target's name, so writers that choose the format by extension
    (.nii.gz, .nrrd, .png) behave as for the target itself.
    """
    path = check_writable_target(path, overwrite)
    temp = path.with_name(f".qmedsam-{uuid.uuid4().hex[:8]}.{path.name}")
    try:
        # os.open rather than tempfile: the file gets the usual umask permissions, not 0600.
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write_fn(temp)
        if not overwrite and path.exists():  # someone else wrote it meanwhile: keep theirs
            raise QMedSAMError(f"Output {path} appeared while it was being written; "
                               "pass --overwrite to replace it.")
        os.replace(temp, path)
    except OSError as error:
        reason = error.strerror or str(error)
        raise QMedSAMError(f"Cannot write {path} ({reason}); check free space and permissions, "
                           "or choose another output path.") from None
    finally:
        if temp.exists():
            temp.unlink()
