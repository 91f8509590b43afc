"""SAM prompt encoder, box prompts only.

Point labels, the padding point and mask prompts are never used by LiteMedSAM's box workflow, but
their parameters are kept so that the checkpoint's 17 ``prompt_encoder.*`` entries load strictly.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor, nn

from .layers import LayerNorm2d


class RandomFourierEncoding(nn.Module):
    """Maps (x, y) in [0, 1] to [sin, cos] of random projections (SAM's PositionEmbeddingRandom)."""

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        # A persistent buffer, not a parameter: it is part of the checkpoint but never trained.
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def forward(self, coords: Tensor) -> Tensor:  # (..., 2) -> (..., 2 * num_feats)
        proj = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class PromptEncoder(nn.Module):
    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: Tuple[int, int] = (64, 64),
        input_image_size: Tuple[int, int] = (256, 256),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        # Indices 0/1: negative/positive click, 2/3: top-left/bottom-right box corner.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def embed_boxes(self, boxes: Tensor) -> Tensor:
        """(N, 4) x_min, y_min, x_max, y_max in input pixels -> (N, 2, embed_dim) corner tokens."""
        h, w = self.input_image_size
        corners = (boxes + 0.5).reshape(-1, 2, 2)  # +0.5: pixel index -> pixel centre
        corners = corners / corners.new_tensor([w, h])
        corner_types = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return self.pe_layer(corners) + corner_types

    def dense_embedding(self) -> Tensor:
        """The "no mask" prompt, (1, embed_dim, 1, 1): the same vector at every position, so it broadcasts
        over the grid and the boxes (an expanded (1, embed_dim, h, w) copy would be folded into a 4 MB
        constant by the exporters)."""
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1)

    def dense_positional_encoding(self) -> Tensor:
        """Positional encoding of the image embedding grid (pixel centres), (1, embed_dim, h, w)."""
        h, w = self.image_embedding_size
        device = self.positional_encoding_device()
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
        return self.pe_layer(grid).permute(2, 0, 1).unsqueeze(0)

    def positional_encoding_device(self) -> torch.device:
        return self.pe_layer.positional_encoding_gaussian_matrix.device

    def forward(self, boxes: Tensor) -> Tuple[Tensor, Tensor]:
        """Returns sparse (N, 2, embed_dim) and dense (1, embed_dim, 1, 1) prompt embeddings."""
        return self.embed_boxes(boxes), self.dense_embedding()
