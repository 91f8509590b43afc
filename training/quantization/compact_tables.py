"""Store the big input-independent tables of an exported LiteMedSAM as the small subgraphs that compute them.

OpenVINO's conversion folds two kinds of tables into constants: the relative-position attention bias of
every TinyViT window attention (`attention_biases[:, bias_index]`, up to 5x196x196 values from 5x196
parameters) and the decoder's positional encoding of the 64x64 grid (256x64x64 values from a 2x128
Fourier matrix). Folded, they are ~10 % of the FP32 files and ~25 % of the INT8 ones. Each folded constant
is recognised by its values (compared with the torch model's own table) and replaced by a Gather of the
bias parameters by their index, or by sin/cos of the grid's Fourier projection. The CPU plugin folds these
again when it compiles, so the compiled model and its speed do not change; only the files shrink.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import openvino as ov
import openvino.opset13 as opset
import torch
from torch import nn

MIN_ELEMENTS = 1 << 16  # smaller constants are weights or scales, never a folded table


@dataclass
class Table:
    name: str
    layouts: list  # the table's values in each element order an exporter may have folded it to
    build: Callable[[tuple, int], ov.Output]  # (target shape, layout number) -> subgraph output


def _attention_bias_tables(model: nn.Module) -> list[Table]:
    tables, shared_index = [], {}
    for name, module in model.image_encoder.named_modules():
        if not hasattr(module, "attention_biases"):
            continue
        params = module.attention_biases.detach().float().numpy()
        index = module.bias_index.numpy().astype(np.int32)

        def build(shape, _layout, params=params, index=index):
            key = index.tobytes()
            if key not in shared_index:  # one index table per window size, shared by its blocks
                shared_index[key] = opset.constant(index)
            gathered = opset.gather(opset.constant(params), shared_index[key], opset.constant(np.int32(1)))
            return opset.reshape(gathered, opset.constant(np.array(shape, np.int64)), False).output(0)

        tables.append(Table(f"image_encoder.{name} attention bias", [params[:, index]], build))
    return tables


def _positional_encoding_table(model: nn.Module) -> Table:
    encoder = model.prompt_encoder
    with torch.no_grad():
        table = encoder.dense_positional_encoding()[0].numpy()  # (C, h, w)
    channels, h, w = table.shape
    ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    centred = (2 * np.stack([xs.ravel(), ys.ravel()], axis=-1) - 1).astype(np.float32)  # (h*w, 2)
    gaussian = encoder.pe_layer.positional_encoding_gaussian_matrix.detach().float().numpy()

    def build(shape, layout):
        projected = opset.multiply(opset.matmul(opset.constant(centred), opset.constant(gaussian), False, False),
                                   opset.constant(np.float32(2 * math.pi)))
        features = opset.concat([opset.sin(projected), opset.cos(projected)], axis=-1)  # (h*w, C)
        if layout == 0:  # channel-first order
            features = opset.transpose(features, opset.constant(np.array([1, 0], np.int64)))
        return opset.reshape(features, opset.constant(np.array(shape, np.int64)), False).output(0)

    channel_last = table.reshape(channels, h * w).T
    return Table("prompt_encoder positional encoding", [table, channel_last], build)


def large_float_constants(graph: ov.Model, min_elements: int = MIN_ELEMENTS):
    """(constant op, its values) for every f32 constant of at least `min_elements` values."""
    for op in graph.get_ordered_ops():
        if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f32:
            values = op.get_data()
            if values.size >= min_elements:
                yield op, values


def replace_constant(op, output: ov.Output) -> None:
    for target in list(op.output(0).get_target_inputs()):
        target.replace_source_output(output)


def compact_tables(graph: ov.Model, model: nn.Module, atol: float = 1e-5) -> list[str]:
    """Replace every folded table of `model` found in `graph`; returns what was replaced (name, shape)."""
    tables = _attention_bias_tables(model) + [_positional_encoding_table(model)]
    replaced = []
    for op, values in list(large_float_constants(graph)):
        match = _find(values, tables, atol)
        if match is None:
            continue
        table, layout = match
        replace_constant(op, table.build(tuple(values.shape), layout))
        replaced.append(f"{table.name} {list(values.shape)}")
    graph.validate_nodes_and_infer_types()
    return replaced


def _find(values: np.ndarray, tables: list[Table], atol: float):
    for table in tables:
        for layout, expected in enumerate(table.layouts):
            if expected.size == values.size and np.allclose(values.ravel(), expected.ravel(), rtol=0, atol=atol):
                return table, layout
    return None
