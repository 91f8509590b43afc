"""LiteMedSAM: TinyViT image encoder + SAM box prompt encoder + SAM mask decoder."""

from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT


class LiteMedSAM(nn.Module):
    """Attribute names match the checkpoint's top-level keys.

    Inputs are in the 256x256 model space: the image resized (longest side 256), min-max normalised
    to [0, 1] and zero-padded bottom/right; boxes in the same pixel coordinates.
    """

    image_size = 256

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = TinyViT()
        self.prompt_encoder = PromptEncoder()
        self.mask_decoder = MaskDecoder()

    def embed(self, images: Tensor) -> Tensor:
        """(B, 3, 256, 256) float in [0, 1] -> (B, 256, 64, 64)."""
        return self.image_encoder(images)

    def decode(self, image_embedding: Tensor, boxes: Tensor) -> Tuple[Tensor, Tensor]:
        """image_embedding (1, 256, 64, 64) shared by all boxes (or (N, ...), one per box);
        boxes (N, 4) x_min, y_min, x_max, y_max -> low-res logits (N, 1, 256, 256), IoU (N, 1)."""
        sparse, dense = self.prompt_encoder(boxes)
        image_pe = self.prompt_encoder.dense_positional_encoding()
        return self.mask_decoder(image_embedding, image_pe, sparse, dense)

    def forward(self, images: Tensor, boxes: Tensor) -> Tuple[Tensor, Tensor]:
        """Embed and decode in one call (for training): images batch 1 or N, boxes (N, 4)."""
        return self.decode(self.embed(images), boxes)


class EncoderForExport(nn.Module):
    """image (B, 3, 256, 256) -> image_embedding (B, 256, 64, 64)."""

    def __init__(self, model: LiteMedSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model.embed(image)


class DecoderForExport(nn.Module):
    """image_embedding (1, 256, 64, 64), boxes (N, 4) -> logits (N, 1, 256, 256), iou (N, 1).

    Export with at least two example boxes, otherwise exporters may specialise N to 1.
    """

    def __init__(self, model: LiteMedSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_embedding: Tensor, boxes: Tensor) -> Tuple[Tensor, Tensor]:
        return self.model.decode(image_embedding, boxes)
