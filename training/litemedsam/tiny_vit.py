"""TinyViT image encoder in LiteMedSAM's configuration (256x256 input, 256x64x64 embedding).

LiteMedSAM differs from the TinyViT/MobileSAM original in two places, both visible in the checkpoint:
the patch embedding is two 1x1 stride-1 convolutions (stage 0 runs at full 256x256 resolution), and
the last patch merging has stride 1 (stages 2 and 3 both run at 64x64).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvBN, LayerNorm2d, MatMul


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        half = embed_dim // 2
        self.seq = nn.Sequential(ConvBN(in_chans, half), nn.GELU(), ConvBN(half, embed_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, GELU after the residual sum."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)
        nn.init.zeros_(self.conv3.bn.weight)  # a fresh block starts as identity
        # One activation module per call site, so per-module observers/quantizers see one tensor each.
        self.act1, self.act2, self.act3 = nn.GELU(), nn.GELU(), nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(x + self.conv3(y))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)
        self.act1, self.act2 = nn.GELU(), nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))


class FeedForward(nn.Module):
    """Pre-norm MLP of a TinyViT block (the LayerNorm lives inside, as in the checkpoint)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class WindowAttention(nn.Module):
    """Pre-norm multi-head self-attention inside one window, with a learned relative-position bias.

    The bias has one value per head and per absolute offset (|dy|, |dx|) between two tokens of the
    window; ``bias_index`` maps each token pair to its offset and is rebuilt at construction, not stored.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.qk_matmul = MatMul()
        self.av_matmul = MatMul()

        ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        index = (ys[:, None] - ys[None, :]).abs() * window_size + (xs[:, None] - xs[None, :]).abs()
        self.register_buffer("bias_index", index, persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # (windows, tokens, dim)
        # The checkpoint's qkv output is grouped by head first: [q_h, k_h, v_h] for each head h.
        qkv = self.qkv(self.norm(x)).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=-1)
        attn = self.qk_matmul(q, k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.bias_index]
        attn = attn.softmax(dim=-1)
        return self.proj(self.av_matmul(attn, v).transpose(1, 2).flatten(2))


class TinyViTBlock(nn.Module):
    """Window attention, 3x3 depthwise "local" conv, MLP. Works on channels-last (B, H, W, C) maps."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def _windowed_attention(self, x: Tensor) -> Tensor:
        _, h, w, c = x.shape
        ws = self.window_size
        pad_b, pad_r = -h % ws, -w % ws
        # Padded zeros pass through the attention's LayerNorm and act as extra keys; that is what the
        # weights were trained with, so it must be kept rather than masked out.
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        nh, nw = (h + pad_b) // ws, (w + pad_r) // ws
        windows = x.reshape(-1, nh, ws, nw, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        out = self.attn(windows)
        out = out.reshape(-1, nh, nw, ws, ws, c).transpose(2, 3).reshape(-1, nh * ws, nw * ws, c)
        return out[:, :h, :w]

    def forward(self, x: Tensor) -> Tensor:
        x = x + self._windowed_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: Optional[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class AttentionStage(nn.Module):
    """TinyViT blocks on NCHW input and output (channels-last inside)."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 downsample: Optional[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """Image (B, 3, 256, 256) in [0, 1] -> embedding (B, 256, 64, 64)."""

    def __init__(
        self,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        merge_strides: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        for i, dim in enumerate(embed_dims):
            merge = None
            if i + 1 < len(embed_dims):
                merge = PatchMerging(dim, embed_dims[i + 1], merge_strides[i])
            if i == 0:
                stage = ConvStage(dim, depths[i], mbconv_expand_ratio, merge)
            else:
                stage = AttentionStage(dim, depths[i], num_heads[i], window_sizes[i], mlp_ratio, merge)
            self.layers.append(stage)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.neck(x)


def _init_weights(module: nn.Module) -> None:
    # Only matters when training from scratch; the checkpoint overwrites everything.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
