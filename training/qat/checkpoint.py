"""QAT checkpoints: what they hold, how they are written (atomically) and how a model is rebuilt from one.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with `weights_only=True`
(no unpickling of arbitrary objects). It records the quantization recipe and which parts were quantized,
which is all that is needed to rebuild the same module structure from the float LiteMedSAM before
loading the state: there is one model definition, and quantization is a transformation of it.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch
from qmedsam.atomic import atomic_write
from torch import nn

from training.litemedsam import load_litemedsam
from training.quantization.quantize import QuantRecipe, quantize

FORMAT = "qmedsam-qat-checkpoint/1"


def save_checkpoint(path: Path, payload: dict) -> None:
    """Written atomically (qmedsam.atomic): an interrupted save never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temp: torch.save(dict(payload, format=FORMAT), temp), overwrite=True)


def load_checkpoint(path: Path) -> dict:
    if not Path(path).is_file():
        raise SystemExit(f"checkpoint {path} not found; run the previous QAT stage first (its best.pt)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise SystemExit(f"{path} is damaged or not a checkpoint ({str(error).splitlines()[0]}); "
                         "rerun its stage (with --restart if it is a last.pt)") from None
    if checkpoint.get("format") != FORMAT:
        raise SystemExit(f"{path} is not a QMedSAM QAT checkpoint (format {checkpoint.get('format')!r})")
    return checkpoint


def quantized_litemedsam(recipe: QuantRecipe, parts, state: Optional[dict] = None) -> tuple[nn.Module, list]:
    """The float LiteMedSAM with `parts` quantized by `recipe`, loaded with `state` if given."""
    model = load_litemedsam().eval()
    report = quantize(model, replace(recipe, parts=tuple(parts))) if parts else []
    if state is not None:
        model.load_state_dict(state)
    return model, report


def model_from_checkpoint(path: Path) -> tuple[nn.Module, dict]:
    checkpoint = load_checkpoint(path)
    recipe = QuantRecipe.from_dict(checkpoint["recipe"])
    model, _ = quantized_litemedsam(recipe, checkpoint["quantized_parts"], checkpoint["model"])
    return model.eval(), checkpoint
