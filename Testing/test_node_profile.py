"""training.evaluation.node_profile on the shipped default: where its 16-box decoder spends time, by kernel."""

import openvino as ov
from qmedsam.catalogue import find_model

from training.evaluation.node_profile import profile_models
from training.quantization.export_qcdq import compile_f32, runtime_layers


def test_default_decoder_moves_image_tokens_as_int8_at_run_time():
    """The runtime graph, not the IR: with the quantizer hoisted above the tokens-to-image Transpose
    (export_qcdq), the image tokens of every box (16 x 256 x 4096) reach the upscaling as int8 (a float Transpose
    there cost ~40 ms); the float Transposes left are the transformer's attention layouts and the folded last
    upscaling's pixel shuffle of the 1-channel mask product, (N, 2, 2, h, w). Every profiled kind has a time
    and a node count."""
    decoder = profile_models(["litemedsam-int8-ptq"], repeats=1)["litemedsam-int8-ptq"]["decoder_16_boxes"]
    assert decoder["wall_ms"] > 0 and all(kind["nodes"] > 0 for kind in decoder["by_kind"].values())
    assert decoder["runtime_nodes"]["Transpose"] > 0  # the count reads the runtime model
    entry = find_model("litemedsam-int8-ptq")
    float_transposes = [name for name, layer, precision in runtime_layers(compile_f32(entry.folder / entry.decoder, 1))
                        if layer == "Transpose" and precision == "f32"]
    transpose_inputs = {op.get_friendly_name(): op.input_value(0).get_partial_shape()
                        for op in ov.Core().read_model(str(entry.folder / entry.decoder)).get_ordered_ops()
                        if op.get_type_name() == "Transpose"}

    def mask_product_shuffle(name: str) -> bool:
        shape = transpose_inputs.get(name)
        return shape is not None and shape.rank.get_length() == 5 and str(shape[1:3]) == "[2,2]"

    assert all(name.startswith("/mask_decoder/transformer/") or mask_product_shuffle(name) for name in float_transposes)
    assert sum(map(mask_product_shuffle, float_transposes)) <= 1
