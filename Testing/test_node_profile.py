"""training.evaluation.node_profile on the shipped default: where its 16-box decoder spends time, by kernel."""

import openvino as ov
from qmedsam.catalogue import find_model

from training.evaluation.node_profile import profile_models, settings_for


def test_default_decoder_moves_image_tokens_as_int8_at_run_time():
    """The runtime graph, not the IR: with the quantizer hoisted above the tokens-to-image Transpose
    (export_qcdq), the image tokens of every box (16 x 256 x 4096) reach the upscaling as int8 (a float Transpose
    there cost ~40 ms); the float Transposes left are the transformer's attention layouts. Every profiled kind
    has a time and a node count."""
    decoder = profile_models(["litemedsam-int8-ptq"], repeats=1)["litemedsam-int8-ptq"]["decoder_16_boxes"]
    assert decoder["wall_ms"] > 0 and all(kind["nodes"] > 0 for kind in decoder["by_kind"].values())
    assert decoder["runtime_nodes"]["Transpose"] > 0  # the count reads the runtime model
    entry = find_model("litemedsam-int8-ptq")
    compiled = ov.Core().compile_model(str(entry.folder / entry.decoder), "CPU", settings_for(1))
    float_transposes = [op.get_friendly_name() for op in compiled.get_runtime_model().get_ordered_ops()
                        if op.get_rt_info()["layerType"].astype(str) == "Transpose"
                        and op.get_rt_info()["runtimePrecision"].astype(str) == "f32"]
    assert all(name.startswith("/mask_decoder/transformer/") for name in float_transposes)
