"""Quantized LiteMedSAM → Brevitas QCDQ ONNX → OpenVINO IR in the model catalogue.

QCDQ is QuantizeLinear → Clip → DequantizeLinear. OpenVINO's low-precision transformations turn a
DequantizeLinear feeding a Conv/MatMul into a real int8 kernel, except where a Clip sits on the int8
*weights*: that keeps the layer in f32 at run time. The weights are constants, so the Clip is applied to
the stored int8 values here and removed (`fold_weight_clips`), which changes no number.
Likewise an all-zero zero point of a DequantizeLinear is dropped (`drop_zero_zero_points`): the exporter
shares one zero-point tensor between layers of the same width, OpenVINO then keeps a run-time Subtract on
those weights and cannot use int8 kernels for them (seen for every attention `proj` and MLP `fc2`).
"""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
import openvino.opset13 as opset
import torch
from onnx import numpy_helper

from training.litemedsam.model import DecoderForExport, EncoderForExport
from training.quantization.compact_tables import compact_tables, large_float_constants, replace_constant

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="fast_hadamard_transform")
    from brevitas.export import export_onnx_qcdq

EXAMPLE_BOXES = torch.tensor([[10.0, 20, 120, 140], [30, 40, 200, 220]])  # 2 boxes: keeps N dynamic


def _constant_values(graph: onnx.GraphProto) -> dict:
    """Every constant tensor of the graph (initializers and Constant nodes) by output name."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    values.update({node.output[0]: numpy_helper.to_array(node.attribute[0].t)
                   for node in graph.node if node.op_type == "Constant" and node.attribute[0].name == "value"})
    return values


def fold_weight_clips(model: onnx.ModelProto) -> int:
    """Apply every Clip whose input and bounds are constants (int8 weights) to that constant; drop the Clip."""
    graph = model.graph
    values = _constant_values(graph)
    folded, keep, renames = 0, [], {}
    for node in graph.node:
        bounds = [name for name in node.input[1:] if name]
        if node.op_type != "Clip" or node.input[0] not in values or any(b not in values for b in bounds):
            keep.append(node)
            continue
        weights = values[node.input[0]]
        low = values[node.input[1]] if len(node.input) > 1 and node.input[1] else weights.min()
        high = values[node.input[2]] if len(node.input) > 2 and node.input[2] else weights.max()
        name = node.output[0] + "_folded"
        graph.initializer.append(numpy_helper.from_array(np.clip(weights, low, high).astype(weights.dtype), name))
        renames[node.output[0]] = name
        folded += 1
    for node in keep:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    del graph.node[:]
    graph.node.extend(keep)
    return folded


def drop_zero_zero_points(model: onnx.ModelProto) -> int:
    """Remove constant all-zero zero points from DequantizeLinear nodes (the ONNX default is zero)."""
    values = _constant_values(model.graph)
    dropped = 0
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) == 3:
            zero_point = values.get(node.input[2])
            if zero_point is not None and not np.any(zero_point):
                del node.input[2]
                dropped += 1
    return dropped


def _to_openvino(module: torch.nn.Module, args: tuple, input_names: list, output_names: list,
                 dynamic_axes: dict | None, work: Path) -> tuple[ov.Model, int]:
    path = work / f"{input_names[-1]}.onnx"
    with torch.no_grad():
        export_onnx_qcdq(module, args=args, export_path=str(path), input_names=input_names,
                         output_names=output_names, dynamic_axes=dynamic_axes, opset_version=17, dynamo=False,
                         do_constant_folding=False)
    model = onnx.load(str(path))
    folded = fold_weight_clips(model)
    drop_zero_zero_points(model)
    onnx.save(model, str(path))
    return ov.convert_model(str(path)), folded


LAYOUT_OPS = ("Reshape", "Transpose")


def _layout_chain(fq) -> list:
    """The Reshape/Transpose nodes that feed `fq`, nearest first, each with `fq`'s path as its only consumer."""
    chain, node = [], fq.input_value(0).get_node()
    while node.get_type_name() in LAYOUT_OPS and len(node.output(0).get_target_inputs()) == 1:
        chain.append(node)
        node = node.input_value(0).get_node()
    return chain


def _rank(output) -> int:
    return output.get_partial_shape().rank.get_length()


def _image_token_change(chain: list) -> list:
    """The nearest layout ops of `chain` that change between image and token layout, or [] if none do: an image
    flattened to tokens (a Reshape N, C, H, W -> N, C, H*W: the hypernetwork product's input), or tokens turned
    back into an image (a Transpose of (N, L, C) tokens, then a Reshape to N, C, H, W: the upscaling
    deconvolution's input). Other layout changes (attention heads split or merged) are left alone: OpenVINO
    fuses those attentions whole, quantizers included."""
    if not chain or chain[0].get_type_name() != "Reshape":
        return []
    first = chain[0]
    if _rank(first.input_value(0)) == 4 and _rank(first.output(0)) == 3:
        return chain[:1]
    if len(chain) >= 2 and chain[1].get_type_name() == "Transpose" and _rank(chain[1].input_value(0)) == 3 \
            and _rank(first.output(0)) == 4:
        return chain[:2]
    return []


def hoist_quantize_above_layout(model: ov.Model) -> int:
    """Move every per-tensor FakeQuantize that follows a change between image and token layout
    (`_image_token_change`) to before it, and redo the layout change on the quantized tensor.

    Exact (a per-tensor quantizer commutes with reshapes and transposes), and it lets OpenVINO move the int8
    tensor instead of the float one: the hypernetwork product quantizes the upscaled embedding after `.view(b, c,
    h*w)`, and the channels-last -> planar reorder of that float tensor (16 boxes: 16 x 32 x 256 x 256) was a
    slow reference kernel that cost more than the whole int8 decoder saved; the deconvolution's input (image
    tokens transposed and unflattened, 16 boxes x 256 x 4096) was a float Transpose of ~40 ms at 1 thread.
    Returns how many were moved.
    """
    moved = 0
    for fq in model.get_ordered_ops():
        if fq.get_type_name() != "FakeQuantize":
            continue
        if any(fq.input_value(i).get_partial_shape().is_dynamic or
               int(np.prod(fq.input_value(i).get_shape())) != 1 for i in range(1, 5)):
            continue
        chain = _image_token_change(_layout_chain(fq))
        if not chain:
            continue
        source = chain[-1].input_value(0)
        rank = source.get_partial_shape().rank.get_length()
        # scalar bounds of a higher rank than the new input would broadcast it to that rank: give them its rank
        bounds = [fq.input_value(i) if fq.input_value(i).get_partial_shape().rank.get_length() <= rank else
                  opset.reshape(fq.input_value(i), opset.constant(np.ones(rank, np.int64)), False).output(0)
                  for i in range(1, 5)]
        value = opset.fake_quantize(source, *bounds, fq.get_attributes()["levels"]).output(0)
        for layout in reversed(chain):  # the layout changes again, in their order, on the quantized tensor
            if layout.get_type_name() == "Reshape":
                value = opset.reshape(value, layout.input_value(1), layout.get_attributes()["special_zero"]).output(0)
            else:
                value = opset.transpose(value, layout.input_value(1)).output(0)
        for target in list(fq.output(0).get_target_inputs()):
            target.replace_source_output(value)
        moved += 1
    model.validate_nodes_and_infer_types()
    return moved


def convert_quantized(model: torch.nn.Module) -> tuple[ov.Model, ov.Model, dict]:
    """OpenVINO encoder and decoder of a (Brevitas-)quantized LiteMedSAM, with a few export facts."""
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        encoder, enc_folded = _to_openvino(EncoderForExport(model), (torch.rand(1, 3, 256, 256),),
                                           ["image"], ["image_embedding"], None, work)
        decoder, dec_folded = _to_openvino(
            DecoderForExport(model), (torch.rand(1, 256, 64, 64), EXAMPLE_BOXES),
            ["image_embedding", "boxes"], ["low_res_logits", "iou"],
            {"boxes": {0: "boxes"}, "low_res_logits": {0: "boxes"}, "iou": {0: "boxes"}}, work)
    compacted = compact_tables(encoder, model) + compact_tables(decoder, model)
    hoisted = {"encoder": hoist_quantize_above_layout(encoder), "decoder": hoist_quantize_above_layout(decoder)}
    return encoder, decoder, {"weight_clips_folded": {"encoder": enc_folded, "decoder": dec_folded},
                              "compacted_tables": compacted, "quantizers_moved_above_layout_changes": hoisted}


def store_large_float_constants_as_fp16(model: ov.Model, min_elements: int = 1 << 16) -> int:
    """Store big float constants that compact_tables did not recognise as fp16 + Convert; returns bytes saved.

    A safety net: in LiteMedSAM every folded table is rebuilt from its sources (training/quantization/compact_tables.py)
    and nothing this large is left. Should a model change leave one, it costs half, not all, of its f32
    size; OpenVINO turns it back into f32 when it compiles, and fp16 rounding (~5e-4 relative) is far below
    the int8 activation noise it would feed. Weights and quantization scales are smaller than `min_elements`.
    """
    saved = 0
    for op, values in list(large_float_constants(model, min_elements)):
        replace_constant(op, opset.convert(opset.constant(values.astype(np.float16)), ov.Type.f32).output(0))
        saved += values.size * 2
    model.validate_nodes_and_infer_types()
    return saved


def save_pair(encoder: ov.Model, decoder: ov.Model, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # No blanket fp16 compression: quantization scales, biases and LayerNorm parameters stay f32.
    for model in (encoder, decoder):
        store_large_float_constants_as_fp16(model)
    ov.save_model(encoder, folder / "encoder.xml", compress_to_fp16=False)
    ov.save_model(decoder, folder / "decoder.xml", compress_to_fp16=False)


COMPUTE_LAYERS = ("Convolution", "FullyConnected", "MatMul", "Deconvolution", "GroupConvolution")
# A Subgraph is a Snippets kernel: on CPUs with VNNI or AMX a whole attention (q·kᵀ, softmax, attn·v) fuses
# into one, so counting only MatMul layers would miss those products; int8 Subgraphs are counted with them.


def _counted_layer(layer: str, precision: str) -> bool:
    return layer in COMPUTE_LAYERS or (layer == "Subgraph" and precision in ("i8", "u8"))


def compile_f32(xml: Path, threads: int = 2) -> ov.CompiledModel:
    """The model compiled for OpenVINO's CPU plugin with f32 float arithmetic, as the engine runs it."""
    return ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                     "INFERENCE_NUM_THREADS": threads})


def runtime_precisions(xml: Path, threads: int = 2) -> dict:
    """What OpenVINO's CPU plugin really runs: {"<layer type> <precision>": count} over compute layers,
    read from the compiled model's execution graph."""
    counts = Counter(f"{layer} {precision}" for _, layer, precision in runtime_layers(compile_f32(xml, threads))
                     if _counted_layer(layer, precision))
    return dict(sorted(counts.items()))


def runtime_layers(compiled: ov.CompiledModel) -> list[tuple[str, str, str]]:
    """(node name, layer type, runtime precision) of every node of a compiled model's execution graph, in order."""
    return [(op.get_friendly_name(), op.get_rt_info()["layerType"].astype(str),
             op.get_rt_info()["runtimePrecision"].astype(str)) for op in compiled.get_runtime_model().get_ordered_ops()]
