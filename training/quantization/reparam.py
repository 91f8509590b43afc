"""Scale reparameterization (RepQ-ViT, as used by DFQ-SAM) of the TinyViT encoder's post-LayerNorm activations.

The LayerNorm outputs that feed `attn.qkv` and `mlp.fc1` have channels with very different centres and
ranges, so one per-tensor activation scale either clips the wide channels or rounds the narrow ones to a
few levels. Per channel c, with the range [min_c, max_c] measured on calibration images:

    centre δ_c = (max_c + min_c) / 2,  half-range r_c = (max_c − min_c) / 2,  k_c = r_c / r̄,  r̄ = mean_c r_c
    LayerNorm:  γ' = γ / k,  β' = (β − δ) / k          (its output becomes (y − δ) / k)
    Linear:     W' = W · diag(k),  b' = b + W · δ      (undoes it: W'(y − δ)/k + b' = W y + b)

The float function is unchanged, and every channel now spans about [−r̄, r̄], which a symmetric per-tensor
quantizer covers evenly. r̄ only sets an overall scale that the per-tensor activation and weight
quantizers absorb; the mean (RepQ-ViT's choice) keeps the values near their original magnitude.
Must run on the float model, before quantization.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from training.litemedsam.tiny_vit import FeedForward, WindowAttention

# A channel whose range is under this fraction of r̄ keeps k at this floor: k stays positive and finite,
# and the channel simply uses less than the full range, as it did before.
MIN_SCALE_RATIO = 1e-3


def norm_linear_pairs(model: nn.Module) -> list[tuple[str, nn.LayerNorm, nn.Linear]]:
    """(LayerNorm name, LayerNorm, the Linear it feeds) for attn.norm -> qkv and mlp.norm -> fc1 of every block."""
    pairs = []
    for name, module in model.image_encoder.named_modules():
        if isinstance(module, WindowAttention):
            pairs.append((f"image_encoder.{name}.norm", module.norm, module.qkv))
        elif isinstance(module, FeedForward):
            pairs.append((f"image_encoder.{name}.norm", module.norm, module.fc1))
    return pairs


@torch.no_grad()
def channel_ranges(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                   modules: dict[str, nn.Module]) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-channel (min, max), float64, of each module's output (last axis) over the images of `batches`.

    Hooks see the attention's windows after padding: the zero tokens TinyViT pads with go through the
    LayerNorm into qkv like any other token, so their values belong to the range the quantizer must cover.
    """
    ranges: dict[str, tuple[Tensor, Tensor]] = {}

    def hook(name):
        def record(_module, _inputs, output):
            flat = output.detach().reshape(-1, output.shape[-1]).double()
            low, high = flat.amin(0), flat.amax(0)
            if name in ranges:
                low, high = torch.minimum(ranges[name][0], low), torch.maximum(ranges[name][1], high)
            ranges[name] = (low, high)
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        for images, _boxes in batches:
            model.embed(images)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def range_spread(low: Tensor, high: Tensor) -> dict:
    """How unevenly channels fill a symmetric per-tensor range: max/min half-range, and the median
    channel's half-range as a fraction of the per-tensor |max| (1 = every channel uses the whole range)."""
    half = (high - low) / 2
    absmax = torch.maximum(low.abs(), high.abs()).max()
    return {"spread": float(half.max() / half.min().clamp_min(1e-12)),
            "coverage": float(half.median() / absmax.clamp_min(1e-12))}


@torch.no_grad()
def fold_channel_scales(norm: nn.LayerNorm, linear: nn.Linear, low: Tensor, high: Tensor) -> Tensor:
    """Centre and equalise the LayerNorm's output channels, compensated in the Linear; returns k (float64)."""
    if type(linear) is not nn.Linear or norm.weight is None:
        raise ValueError("reparameterize the float model (affine LayerNorm -> nn.Linear), before quantizing it")
    centre, half = (high + low) / 2, (high - low) / 2
    target = half.mean().clamp_min(torch.finfo(torch.float32).tiny)
    k = half.clamp_min(MIN_SCALE_RATIO * target) / target
    weight = linear.weight.double()
    bias = linear.bias.double() if linear.bias is not None else torch.zeros(linear.out_features, dtype=torch.float64)
    norm.weight.copy_(norm.weight.double() / k)
    norm.bias.copy_((norm.bias.double() - centre) / k)
    linear.weight.copy_(weight * k)
    new_bias = (bias + weight @ centre).to(linear.weight.dtype)
    if linear.bias is None:
        linear.bias = nn.Parameter(new_bias)
    else:
        linear.bias.copy_(new_bias)
    return k


def reparameterize(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> list[dict]:
    """Reparameterize every TinyViT block of a float LiteMedSAM in place from the ranges seen on `batches`
    ((images, boxes) pairs; only the images are used). Returns one record per LayerNorm: the channel-range
    spread and coverage (`range_spread`) before and after, the latter computed from the folded ranges."""
    pairs = norm_linear_pairs(model)
    ranges = channel_ranges(model, batches, {name: norm for name, norm, _ in pairs})
    report = []
    for name, norm, linear in pairs:
        low, high = ranges[name]
        k = fold_channel_scales(norm, linear, low, high)
        half_after = (high - low) / 2 / k
        before, after = range_spread(low, high), range_spread(-half_after, half_after)
        report.append({"layer": name, "channels": int(k.numel()),
                       "spread_before": before["spread"], "spread_after": after["spread"],
                       "coverage_before": before["coverage"], "coverage_after": after["coverage"]})
    return report
