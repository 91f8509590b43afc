"""Quantization as a transformation of the one LiteMedSAM model (Brevitas fake quantization).

`quantize(model, recipe)` swaps, in place, the Linear / Conv2d / ConvTranspose2d layers of the chosen parts
(image encoder, mask decoder) for Brevitas layers that quantize their weights and their input, and every
`MatMul` (attention q·kᵀ and attn·v, the hypernetwork product) for a `QuantMatMul` that quantizes both
operands. LayerNorm, BatchNorm, activations, softmax, biases and the prompt encoder stay float.

The defaults are the QMedSAM paper's recipe (8-bit symmetric per-tensor weights, 8-bit signed symmetric
per-tensor activations with a learned scale initialised from statistics); the other fields are the
measured improvements (per-channel weights, BatchNorm folded first, unsigned post-softmax operand,
float depthwise convolutions, layers kept float by name). Each choice is recorded with the model.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Optional

import torch

with warnings.catch_warnings():  # Brevitas notes an optional CUDA kernel package that CPU work never needs
    warnings.filterwarnings("ignore", message="fast_hadamard_transform")
    import brevitas.nn as qnn
    from brevitas.graph.calibrate import calibration_mode
from brevitas.quant import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFloat,
    Uint8ActPerTensorFloat,
)
from torch import Tensor, nn

from training.litemedsam.layers import ConvBN, MatMul

QUANTIZABLE_PARTS = ("image_encoder", "mask_decoder")


@dataclass(frozen=True)
class QuantRecipe:
    parts: tuple = QUANTIZABLE_PARTS
    weight_bits: int = 8
    act_bits: int = 8
    weight_per_channel: bool = False
    conv_weight_bits: Optional[int] = None  # e.g. 7: keeps int8 convolutions exact on CPUs without VNNI
    fold_batchnorm: bool = False
    unsigned_softmax: bool = False  # probabilities are >= 0: unsigned gives the operand one more bit
    float_depthwise: bool = False
    keep_float: tuple = ()  # module-name prefixes left float, e.g. ("image_encoder.patch_embed",)

    @classmethod
    def from_dict(cls, values: dict | None) -> QuantRecipe:
        values = dict(values or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown quantization recipe field(s): {', '.join(sorted(unknown))}")
        for name in ("parts", "keep_float"):
            if name in values:
                values[name] = tuple(values[name])
        bad_parts = set(values.get("parts", ())) - set(QUANTIZABLE_PARTS)
        if bad_parts:
            raise ValueError(f"parts must be among {QUANTIZABLE_PARTS}, got {sorted(bad_parts)}")
        return cls(**values)

    @property
    def precision(self) -> str:
        """The catalogue's precision label: "int8" when weights and activations share a bit width."""
        if self.weight_bits == self.act_bits:
            return f"int{self.weight_bits}"
        return f"w{self.weight_bits}a{self.act_bits}"

    def to_dict(self) -> dict:
        values = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


class QuantMatMul(nn.Module):
    """``a @ b`` with both operands fake-quantized (exported as Q/DQ pairs feeding an int8 MatMul)."""

    def __init__(self, a_quant, b_quant) -> None:
        super().__init__()
        self.a_quant = qnn.QuantIdentity(act_quant=a_quant, return_quant_tensor=False)
        self.b_quant = qnn.QuantIdentity(act_quant=b_quant, return_quant_tensor=False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.matmul(self.a_quant(a), self.b_quant(b))


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ConvBN's BatchNorm (eval statistics) into its convolution; returns how many were folded.

    Exact in eval mode. Afterwards the scale lives in the weights, so per-channel weight quantization covers
    it and OpenVINO sees a plain convolution with bias.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, ConvBN) and isinstance(module.bn, nn.BatchNorm2d):
            bn, conv = module.bn, module.c
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            with torch.no_grad():
                conv.weight.mul_(scale[:, None, None, None])
                bias = bn.bias - bn.running_mean * scale
                if conv.bias is None:
                    conv.bias = nn.Parameter(bias.detach().clone())
                else:
                    conv.bias.copy_(conv.bias * scale + bias)
            module.bn = nn.Identity()
            count += 1
    return count


def _is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels


def _quantizers(recipe: QuantRecipe, layer: nn.Module):
    conv = isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))
    weight_bits = recipe.conv_weight_bits if conv and recipe.conv_weight_bits else recipe.weight_bits
    weight = (Int8WeightPerChannelFloat if recipe.weight_per_channel else Int8WeightPerTensorFloat)
    return weight.let(bit_width=weight_bits), Int8ActPerTensorFloat.let(bit_width=recipe.act_bits)


def _quant_layer(layer: nn.Module, recipe: QuantRecipe) -> nn.Module:
    weight_quant, input_quant = _quantizers(recipe, layer)
    common = dict(bias=layer.bias is not None, weight_quant=weight_quant, input_quant=input_quant,
                  return_quant_tensor=False)
    if isinstance(layer, nn.Linear):
        new = qnn.QuantLinear(layer.in_features, layer.out_features, **common)
    elif isinstance(layer, nn.ConvTranspose2d):
        new = qnn.QuantConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                       layer.padding, layer.output_padding, groups=layer.groups, **common)
    else:
        new = qnn.QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                              layer.padding, layer.dilation, layer.groups, **common)
    with torch.no_grad():
        new.weight.copy_(layer.weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new


def _quant_matmul(name: str, recipe: QuantRecipe) -> QuantMatMul:
    act = Int8ActPerTensorFloat.let(bit_width=recipe.act_bits)
    # av_matmul's first operand is the softmax output in every attention of the model.
    first = Uint8ActPerTensorFloat.let(bit_width=recipe.act_bits) if (
        recipe.unsigned_softmax and name.endswith("av_matmul")) else act
    return QuantMatMul(first, act)


def quantize(model: nn.Module, recipe: QuantRecipe = QuantRecipe()) -> list[dict]:
    """Apply `recipe` to a float LiteMedSAM in place; returns one record per layer (quantized or kept float)."""
    if recipe.fold_batchnorm:
        fold_batchnorm(model)
    report = []
    for part in recipe.parts:
        root = getattr(model, part)
        for name, module in list(root.named_modules()):
            full = f"{part}.{name}"
            if not isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, MatMul)):
                continue
            float_reason = None
            if any(full.startswith(prefix) for prefix in recipe.keep_float):
                float_reason = "keep_float"
            elif recipe.float_depthwise and _is_depthwise(module):
                float_reason = "float_depthwise"
            kind = type(module).__name__
            if float_reason is None:
                new = _quant_matmul(full, recipe) if isinstance(module, MatMul) else _quant_layer(module, recipe)
                _replace(root, name, new)
            report.append({"layer": full, "type": kind, "quantized": float_reason is None,
                           "reason": float_reason or ""})
    return report


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d, QuantMatMul)) for m in model.modules())


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], scope: Optional[nn.Module] = None) -> int:
    """Initialise the activation scales in `scope` (default: all) from (images, boxes) batches; returns the count.

    Brevitas collects percentile statistics in calibration mode and turns them into the learned scale
    parameters on exit, so quantization-aware training starts from good scales. A scope (e.g. the mask
    decoder, newly quantized in QAT stage 2) is calibrated while the rest of the model runs as it is,
    already-quantized parts included.
    """
    model.eval()
    count = 0
    with calibration_mode(model if scope is None else scope):
        for images, boxes in batches:
            model(images, boxes)
            count += 1
    return count

