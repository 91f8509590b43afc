"""Quantization as a transformation of the one LiteMedSAM model (Brevitas fake quantization).

`quantize(model, recipe)` swaps, in place, the Linear / Conv2d / ConvTranspose2d layers of the chosen parts
(image encoder, mask decoder) for Brevitas layers that quantize their weights and their input, and every
`MatMul` (attention q·kᵀ and attn·v, the hypernetwork product) for a `QuantMatMul` that quantizes both
operands. LayerNorm, BatchNorm, activations, softmax, biases and the prompt encoder stay float.

The defaults are the QMedSAM paper's recipe (8-bit symmetric per-tensor weights, 8-bit signed symmetric
per-tensor activations with a learned scale initialised from statistics); the other fields are the
measured improvements (per-channel weights, BatchNorm folded first, unsigned post-softmax operand,
float depthwise convolutions or per-channel depthwise inputs, layers kept float by name or pattern, the
decoder's per-box projections and upscaling re-associated before the quantizers are placed) and DFQ-SAM's
low-bit tools (a separate decoder bit width, a log-√2 post-softmax quantizer, scale reparameterization of the
encoder's LayerNorm outputs, training/quantization/reparam.py). Each choice is recorded with the model.

`prepare_quantized(model, recipe, batches)` is the one preparation path of PTQ and QAT: fold BatchNorm,
reparameterize, quantize, calibrate.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields
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
    ShiftedUint8ActPerTensorFloat,
    Uint8ActPerTensorFloat,
)
from torch import Tensor, nn

from training.litemedsam.layers import ConvBN, MatMul
from training.quantization.module_names import module_name_matches
from training.quantization.reparam import reparameterize

QUANTIZABLE_PARTS = ("image_encoder", "mask_decoder")
SATURATION_FREE_WEIGHT_BITS = 7  # narrow range: integers in [-63, 63]


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
    # Module-name prefixes left float, e.g. ("image_encoder.patch_embed",); "*" matches one name part or more
    # (module_name_matches), e.g. "image_encoder.layers.*.local_conv" for every attention block's local conv.
    keep_float: tuple = ()
    mask_decoder_bits: Optional[int] = None  # decoder weights and activations; None: weight_bits/act_bits
    log2_softmax: bool = False  # post-softmax operand of every attn·v on a log-√2 grid (DFQ-SAM)
    reparameterize: bool = False  # scale reparameterization of the encoder's post-LayerNorm activations
    # The decoder's exact per-box re-associations (TwoWayTransformer.fold_projections) switched on before
    # quantization, so the quantizers are placed on, and calibrated on, the folded products that run at
    # inference: no per-box projection of the 4,096 image tokens (docs/int8.md, "The speed gap to NNCF").
    fold_decoder_projections: bool = False
    # Both of the decoder's upscaling steps (kernel-2 stride-2 ConvTransposes) replaced by their exact forms, a 1x1
    # convolution to 4x the channels and a pixel shuffle, the last folded into the per-box hypernetwork product
    # (MaskDecoder.upscaling_as_1x1), before the quantizers are placed: on AVX2 CPUs int8 transposed convolutions
    # run slowly and a 1x1 convolution with unsigned inputs does not (docs/int8.md), and the last shuffle moves
    # 1 channel per box instead of 32.
    upscaling_as_1x1: bool = False
    # The input of every quantized depthwise convolution gets one scale per channel (signed symmetric int8).
    # Its channels have ranges far apart, which one per-tensor scale cannot hold (the masks moved away from
    # FP32); a depthwise convolution mixes no channels, so OpenVINO still runs it with int8 kernels.
    depthwise_inputs_per_channel: bool = False
    # The same integers on every CPU (docs/int8.md): CPUs without VNNI multiply u8 x s8 with vpmaddubsw, whose
    # pairwise int16 sums saturate once |w| reaches 65 (2 * 255 * 64 < 32767 <= 2 * 255 * 65); weights kept
    # within +-63 (7 bits, still stored as int8) cannot saturate, so every kernel computes the exact int32 sum.
    saturation_free_weights: bool = False
    # Inputs of Linear / Conv layers quantized asymmetric unsigned (u8 with a zero point): OpenVINO then runs
    # its u8 FullyConnected kernels (faster than the signed path) and no kernel needs the +128 shift and
    # compensation that signed inputs take on CPUs without s8 x s8 instructions. ConvTranspose inputs stay
    # signed: OpenVINO runs a transposed convolution with an input zero point in f32 (measured).
    unsigned_inputs: bool = False

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

    def bits(self, part: str) -> tuple[int, int]:
        """(weight bits, activation bits) of a part: the decoder may have its own width."""
        if part == "mask_decoder" and self.mask_decoder_bits is not None:
            return self.mask_decoder_bits, self.mask_decoder_bits
        return self.weight_bits, self.act_bits

    @property
    def precision(self) -> str:
        """The catalogue's precision label: "int8" when weights and activations share a bit width, else "w4a8";
        a decoder quantized at another width than the encoder adds "-dec<bits>" (e.g. "int4-dec8")."""
        w, a = self.weight_bits, self.act_bits
        label = f"int{w}" if w == a else f"w{w}a{a}"
        if "mask_decoder" in self.parts and self.bits("mask_decoder") != self.bits("image_encoder"):
            label += f"-dec{self.mask_decoder_bits}"
        return label

    def to_dict(self) -> dict:
        values = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


class QuantMatMul(nn.Module):
    """``a @ b`` with both operands fake-quantized (exported as Q/DQ pairs feeding an int8 MatMul)."""

    def __init__(self, a_quant, b_quant) -> None:
        super().__init__()
        self.a_quant = a_quant if isinstance(a_quant, nn.Module) else qnn.QuantIdentity(
            act_quant=a_quant, return_quant_tensor=False)
        self.b_quant = qnn.QuantIdentity(act_quant=b_quant, return_quant_tensor=False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.matmul(self.a_quant(a), self.b_quant(b))


class LogSqrt2Quant(nn.Module):
    """Fake quantization of probabilities in [0, 1] on the grid 2^(-q/2), q = 0 .. 2^bits - 2, plus 0.

    Softmax outputs crowd near zero with a few large values; a log grid keeps relative precision for both,
    where a uniform 4-bit grid rounds most of them to 0 (RepQ-ViT, DFQ-SAM). The fixed scale is 1, the
    largest probability. Plain torch ops: the QCDQ exporter traces them as float ONNX ops (Log, Round, Clip,
    Pow), so OpenVINO runs a float simulation of it. The gradient is straight-through.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        top = 2 ** self.bits - 1  # the top level stands for 0
        # Flooring the input keeps log2 finite; anything that small lands on the top level anyway.
        floor = 2.0 ** -(top / 2 + 1)
        q = torch.clamp(torch.round(-2 * torch.log2(x.clamp_min(floor))), 0, top)
        # (top - q) clipped to [0, 1] is 0 on the top level and 1 below it; no comparison or where(), whose
        # traced constants pinned the decoder's dynamic box count in the ONNX export.
        quantized = torch.pow(2.0, -q / 2) * torch.clamp(top - q, 0, 1)
        return x + (quantized - x).detach() if x.requires_grad else quantized


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


def _quantizers(recipe: QuantRecipe, layer: nn.Module, part: str):
    weight_bits, act_bits = recipe.bits(part)
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and recipe.conv_weight_bits:
        weight_bits = recipe.conv_weight_bits
    if recipe.saturation_free_weights:
        weight_bits = min(weight_bits, SATURATION_FREE_WEIGHT_BITS)
    weight = (Int8WeightPerChannelFloat if recipe.weight_per_channel else Int8WeightPerTensorFloat)
    weight = weight.let(bit_width=weight_bits)
    if recipe.depthwise_inputs_per_channel and _is_depthwise(layer):
        return weight, Int8ActPerTensorFloat.let(
            bit_width=act_bits, scaling_per_output_channel=True, scaling_stats_permute_dims=(1, 0, 2, 3),
            per_channel_broadcastable_shape=(1, layer.in_channels, 1, 1))
    unsigned = recipe.unsigned_inputs and not isinstance(layer, nn.ConvTranspose2d)
    act = ShiftedUint8ActPerTensorFloat if unsigned else Int8ActPerTensorFloat
    return weight, act.let(bit_width=act_bits)


def _quant_layer(layer: nn.Module, recipe: QuantRecipe, part: str) -> nn.Module:
    weight_quant, input_quant = _quantizers(recipe, layer, part)
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


def _quant_matmul(name: str, recipe: QuantRecipe, part: str) -> QuantMatMul:
    _, act_bits = recipe.bits(part)
    act = Int8ActPerTensorFloat.let(bit_width=act_bits)
    first = act
    if name.endswith("av_matmul"):  # its first operand is the softmax output in every attention of the model
        if recipe.log2_softmax:
            first = LogSqrt2Quant(act_bits)
        elif recipe.unsigned_softmax:
            first = Uint8ActPerTensorFloat.let(bit_width=act_bits)
    return QuantMatMul(first, act)


def _bit_widths(layer: nn.Module) -> dict:
    """The bit widths a quantized layer really uses, read back from its Brevitas quantizers."""
    if isinstance(layer, QuantMatMul):
        first = layer.a_quant
        a_bits = first.bits if isinstance(first, LogSqrt2Quant) else int(first.act_quant.bit_width())
        return {"act_bits": [a_bits, int(layer.b_quant.act_quant.bit_width())]}
    return {"weight_bits": int(layer.weight_quant.bit_width()), "act_bits": int(layer.input_quant.bit_width())}


def quantize(model: nn.Module, recipe: QuantRecipe = QuantRecipe()) -> list[dict]:
    """Apply `recipe` to a float LiteMedSAM in place; returns one record per layer (quantized or kept float).

    Only the module structure depends on the recipe (reparameterization changes values, not structure), so a
    state dict saved after `prepare_quantized` loads into `quantize(load_litemedsam(), recipe)`.
    """
    if recipe.fold_batchnorm:
        fold_batchnorm(model)
    if recipe.fold_decoder_projections and "mask_decoder" in recipe.parts:
        model.mask_decoder.transformer.fold_projections(True)
    if recipe.upscaling_as_1x1 and "mask_decoder" in recipe.parts:
        model.mask_decoder.upscaling_as_1x1()
    # A misspelt prefix would otherwise quantize the layer it meant to keep float. Prefixes of parts this recipe
    # leaves alone are allowed (QAT stages apply one recipe to one part at a time).
    unmatched = [p for p in recipe.keep_float if p.split(".")[0] in recipe.parts or not hasattr(model, p.split(".")[0])]
    names = [f"{part}.{name}" for part in recipe.parts for name, _ in getattr(model, part).named_modules()]
    unmatched = [p for p in unmatched if not any(module_name_matches(name, p) for name in names)]
    if unmatched:
        raise ValueError(f"keep_float prefixes match no module of the parts {list(recipe.parts)}: {unmatched}")
    report = []
    for part in recipe.parts:
        root = getattr(model, part)
        for name, module in list(root.named_modules()):
            full = f"{part}.{name}"
            if not isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, MatMul)):
                continue
            float_reason = None
            if any(module_name_matches(full, prefix) for prefix in recipe.keep_float):
                float_reason = "keep_float"
            elif recipe.float_depthwise and _is_depthwise(module):
                float_reason = "float_depthwise"
            row = {"layer": full, "type": type(module).__name__, "quantized": float_reason is None,
                   "reason": float_reason or ""}
            if float_reason is None:
                new = (_quant_matmul(full, recipe, part) if isinstance(module, MatMul)
                       else _quant_layer(module, recipe, part))
                _replace(root, name, new)
                row.update(_bit_widths(new))
            report.append(row)
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


@dataclass
class Preparation:
    layers: list  # quantize()'s per-layer records
    reparameterized: list = field(default_factory=list)  # reparameterize()'s per-LayerNorm records
    calibration_batches: int = 0


def prepare_quantized(model: nn.Module, recipe: QuantRecipe, batches: Iterable[tuple[Tensor, Tensor]],
                      scope: Optional[nn.Module] = None) -> Preparation:
    """Float LiteMedSAM -> calibrated fake-quantized model, in place: the one path of PTQ and of each QAT stage.

    Fold BatchNorm (if the recipe says) -> reparameterize the image encoder (if the recipe says and quantizes
    the encoder; it measures activation ranges on `batches`) -> quantize `recipe.parts` -> calibrate `scope`
    (default: the whole model) on the same `batches`.
    """
    batches = list(batches)  # used twice: once for the ranges, once for calibration
    if recipe.fold_batchnorm:
        fold_batchnorm(model)
    reparameterized = []
    if recipe.reparameterize and "image_encoder" in recipe.parts:
        reparameterized = reparameterize(model, batches)
    layers = quantize(model, recipe)
    return Preparation(layers, reparameterized, calibrate(model, batches, scope))
