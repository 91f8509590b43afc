"""SAM mask decoder (two-way transformer + upscaling + hypernetwork), single-mask output.

Batching design: image-side tensors (embedding, positional encoding, dense prompt) keep batch 1 and
broadcast against the N box token sets instead of being repeated per box. Every projection of a
batch-1 tensor is therefore computed once per image: in the first two-way layer these are the
token->image key/value projections and the image->token query projection (and the image tokens only
become per-box after that layer's image->token attention). The matmuls broadcast, so the result is
the same as SAM's repeat-per-box computation. An image batch equal to N (one image per box) also works.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import MLP, LayerNorm2d, MatMul


def _weight(linear: nn.Linear) -> Tensor:
    """The weight a folded product multiplies by: a quantized layer's (Brevitas `quant_weight`) dequantized integers,
    so the folded decoder uses the same weights as the layer would, and they can be stored as int8."""
    quant_weight = getattr(linear, "quant_weight", None)
    if quant_weight is None:
        return linear.weight
    weight = quant_weight()  # a QuantTensor; under the QCDQ exporter already the traced dequantized tensor
    return getattr(weight, "value", weight)


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width (``downsample_rate``).

    Two exact re-associations make per-box work cheaper when one side is the 4096 image tokens and the
    other the 7 prompt tokens (switched on for inference export by ``TwoWayTransformer.fold_projections``,
    and before quantization by the recipe field ``fold_decoder_projections``; off by default so training sees
    plain Linear layers):
    - ``fold_keys`` (few queries, many per-box keys/values): scores = (q_h W_k,h) x^T and
      output = (softmax · x) W_v,h^T + b_v,h, instead of projecting all 4096 keys and values per box.
      The key bias adds the same number to a whole row of scores, which softmax ignores; rows of the
      softmax sum to one, so the value bias passes through unchanged.
    - ``fold_queries`` (many per-box queries, few keys): scores = x (W_q^T k_h^T) + b_q k_h^T.
    - ``fold_output``: output = sum over heads of softmax_h · (v_h W_o,h^T) + b_o, never materialising
      the 4096 x internal-width head outputs.
    """

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal = dim // downsample_rate
        if internal % num_heads:
            raise ValueError("num_heads must divide the internal attention width")
        self.num_heads = num_heads
        # A Python float, so tracing exporters see a constant rather than a shape computation.
        self.logit_divisor = math.sqrt(internal // num_heads)
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(dim, internal)
        self.v_proj = nn.Linear(dim, internal)
        self.out_proj = nn.Linear(internal, dim)
        self.qk_matmul = MatMul()
        self.av_matmul = MatMul()
        self.fold_keys = self.fold_queries = self.fold_output = False

    def _heads(self, x: Tensor) -> Tensor:  # (B, L, C) -> (B, heads, L, C / heads)
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def _per_head(self, linear: nn.Linear) -> Tensor:  # (internal, dim) -> (heads, head width, dim)
        return _weight(linear).unflatten(0, (self.num_heads, -1))

    def _scores(self, q: Tensor, k: Tensor) -> Tensor:  # -> (B, heads, Lq, Lk), before softmax
        if self.fold_keys:
            q_through_k = (self._heads(self.q_proj(q)) @ self._per_head(self.k_proj)).flatten(1, 2)
            return self.qk_matmul(q_through_k, k.transpose(-2, -1)).unflatten(1, (self.num_heads, -1))
        if self.fold_queries:
            keys = self._heads(self.k_proj(k)).transpose(-2, -1)  # (N, heads, d, T)
            folded = (self._per_head(self.q_proj).transpose(-2, -1) @ keys)  # (N, heads, dim, T)
            offset = self.q_proj.bias.unflatten(0, (self.num_heads, 1, -1)) @ keys  # (N, heads, 1, T)
            scores = self.qk_matmul(q, folded.transpose(1, 2).flatten(2))  # (N, L, heads * T)
            return scores.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) + offset
        return self.qk_matmul(self._heads(self.q_proj(q)), self._heads(self.k_proj(k)).transpose(-2, -1))

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # q, k, v may have different batch sizes (1 or N); the matmuls broadcast them.
        attn = (self._scores(q, k) / self.logit_divisor).softmax(dim=-1)
        if self.fold_keys:
            mixed = self.av_matmul(attn.flatten(1, 2), v).unflatten(1, (self.num_heads, -1))  # (N, heads, Lq, dim)
            bias = self.v_proj.bias.unflatten(0, (self.num_heads, 1, -1))
            return self.out_proj((mixed @ self._per_head(self.v_proj).transpose(-2, -1) + bias).transpose(1, 2)
                                 .flatten(2))
        if self.fold_output:
            through_out = self._heads(self.v_proj(v)) @ _weight(self.out_proj).unflatten(1, (self.num_heads, -1)) \
                .permute(1, 2, 0)  # (N, heads, T, dim)
            mixed = self.av_matmul(attn.transpose(1, 2).flatten(2), through_out.flatten(1, 2))  # (N, Lq, dim)
            return mixed + self.out_proj.bias
        return self.out_proj(self.av_matmul(attn, self._heads(self.v_proj(v))).transpose(1, 2).flatten(2))


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = nn.ReLU()  # SAM's two-way transformer uses ReLU here, not GELU

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.act(self.lin1(x)))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image attention, token MLP, image->token attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int,
                 skip_first_layer_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor,
                key_pe: Tensor) -> Tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            # First layer: the tokens already are their own positional encoding; SAM skips the residual.
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        keys_pe = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, keys_pe, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(keys_pe, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048,
                 downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, downsample_rate, skip_first_layer_pe=i == 0)
            for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(dim)

    def fold_projections(self, enabled: bool = True) -> None:
        """Exact re-association of the per-box image-side projections (see Attention). The first layer's
        token->image keys/values and image->token queries are still batch 1 (computed once per image),
        so only its image->token output is folded; everything after it is per box and fully folded."""
        first, *rest = self.layers
        first.cross_attn_image_to_token.fold_output = enabled
        for layer in rest:
            layer.cross_attn_token_to_image.fold_keys = enabled
            layer.cross_attn_image_to_token.fold_queries = enabled
            layer.cross_attn_image_to_token.fold_output = enabled
        self.final_attn_token_to_image.fold_keys = enabled

    def forward(self, image_embedding: Tensor, image_pe: Tensor, tokens: Tensor) -> Tuple[Tensor, Tensor]:
        """image_embedding, image_pe (1 or N, C, H, W); tokens (N, T, C) -> tokens, image tokens (N, HW, C)"""
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attn_out = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn_out), keys


def transposed_2x2_as_1x1(weight: Tensor, bias: Tensor) -> Tuple[Tensor, Tensor]:
    """A kernel-2 stride-2 ConvTranspose2d's weight (C_in, C_out, 2, 2) and bias as a 1x1 convolution's to
    C_out * 4 channels, ordered (channel, row, column) as nn.PixelShuffle(2) reads them."""
    return weight.permute(1, 2, 3, 0).flatten(0, 2)[..., None, None], bias.repeat_interleave(4)


class Upscaling1x1(nn.Module):
    """A kernel-2 stride-2 ConvTranspose2d written as a 1x1 convolution to 4x the channels (``expand``) and a
    pixel shuffle: the same result, but a plain convolution that a quantizer treats like any other (unsigned
    int8 inputs, one of CPUs' fastest int8 kernels) where a quantized transposed convolution runs slower."""

    def __init__(self, transposed: nn.ConvTranspose2d) -> None:
        super().__init__()
        self.expand = nn.Conv2d(transposed.in_channels, transposed.out_channels * 4, kernel_size=1)
        weight, bias = transposed_2x2_as_1x1(transposed.weight, transposed.bias)
        with torch.no_grad():
            self.expand.weight.copy_(weight)
            self.expand.bias.copy_(bias)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.expand(x))


class MaskDecoder(nn.Module):
    def __init__(self, dim: int = 256, num_multimask_outputs: int = 3, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer(dim=dim)
        num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        # Only hypernetwork 0 and IoU output 0 (the single-mask output) are used; the multimask heads
        # stay so the checkpoint loads strictly. All mask tokens still take part in self-attention.
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(num_mask_tokens))
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, num_mask_tokens, iou_head_depth)
        self.mask_matmul = MatMul()
        self.fold_last_upscaling = False

    def fold_for_inference(self, enabled: bool = True) -> None:
        """Exact re-associations for the FP32 inference export (off for training, which needs the plain
        layers): the transformer's per-box projections, and the last upscaling step (below). A quantization
        recipe may fold both before its quantizers are placed (`fold_decoder_projections`, `upscaling_as_1x1`)."""
        self.transformer.fold_projections(enabled)
        self.fold_last_upscaling = enabled

    def upscaling_as_1x1(self) -> None:
        """Replace both upscaling ConvTransposes by their exact 1x1 forms (Upscaling1x1) and fold the last one into
        the per-box product, so that quantizers placed afterwards see, and calibrate, the convolutions that run
        at inference (a recipe's `upscaling_as_1x1`)."""
        for index in (0, 3):
            if not isinstance(self.output_upscaling[index], Upscaling1x1):
                self.output_upscaling[index] = Upscaling1x1(self.output_upscaling[index])
        self.fold_last_upscaling = True

    def _upscaled_masks(self, image_tokens: Tensor, hyper_in: Tensor, h: int, w: int) -> Tensor:
        """Mask logits (N, 1, 4h, 4w) = hyper_in . upscaled image tokens.

        Folded: the last ConvTranspose (kernel 2, stride 2) is a 1x1 convolution to 4x the channels followed
        by a pixel shuffle; GELU is elementwise and the hypernetwork product sums over channels only, so the
        shuffle can come after the product, on 1 channel instead of 32 (no large layout change per box).
        """
        image = image_tokens.transpose(1, 2).unflatten(2, (h, w))
        if not self.fold_last_upscaling:
            upscaled = self.output_upscaling(image)
            return self.mask_matmul(hyper_in, upscaled.flatten(2)).unflatten(2, upscaled.shape[-2:])
        first, norm, act, last, last_act = self.output_upscaling
        features = act(norm(first(image)))  # (N, C/4, 2h, 2w)
        if isinstance(last, Upscaling1x1):
            # The QCDQ exporter traces the shape of a quantized layer's output as constants: -1 keeps the box
            # count free.
            out_channels, box_count = last.expand.out_channels // 4, -1
            expanded = last_act(last.expand(features))
        else:
            # The float fold keeps its traced box count and the traced name "as_1x1": both are part of the FP32
            # export's bytes, which models.json pins.
            out_channels, box_count = last.weight.shape[1], None
            as_1x1, repeated_bias = transposed_2x2_as_1x1(last.weight, last.bias)
            expanded = last_act(F.conv2d(features, as_1x1, repeated_bias))
        n, _, rows, cols = expanded.shape
        n = n if box_count is None else box_count
        product = self.mask_matmul(hyper_in, expanded.reshape(n, out_channels, 4 * rows * cols))
        return product.reshape(n, 2, 2, rows, cols).permute(0, 3, 1, 4, 2).reshape(n, 1, 2 * rows, 2 * cols)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, sparse_embeddings: Tensor,
                dense_embeddings: Tensor) -> Tuple[Tensor, Tensor]:
        """image_embedding (1 or N, C, h, w), image_pe (1, C, h, w), dense_embeddings (1, C, 1, 1),
        sparse_embeddings (N, 2, C) -> mask logits (N, 1, 4h, 4w), predicted IoU (N, 1)."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_embeddings.shape[0], -1, -1)
        tokens = torch.cat([output_tokens, sparse_embeddings], dim=1)

        h, w = image_embedding.shape[-2:]
        tokens_out, image_tokens = self.transformer(image_embedding + dense_embeddings, image_pe, tokens)

        hyper_in = self.output_hypernetworks_mlps[0](tokens_out[:, 1:2, :])  # (N, 1, C / 8)
        masks = self._upscaled_masks(image_tokens, hyper_in, h, w)
        iou = self.iou_prediction_head(tokens_out[:, 0, :])[:, :1]
        return masks, iou
