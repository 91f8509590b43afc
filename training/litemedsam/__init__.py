"""PyTorch definition of LiteMedSAM (box-prompted medical SAM) that loads the published checkpoint."""

from .layers import MatMul
from .model import DecoderForExport, EncoderForExport, LiteMedSAM
from .weights import CHECKPOINT_SHA256, find_checkpoint, load_litemedsam

__all__ = [
    "CHECKPOINT_SHA256",
    "DecoderForExport",
    "EncoderForExport",
    "LiteMedSAM",
    "MatMul",
    "find_checkpoint",
    "load_litemedsam",
]
