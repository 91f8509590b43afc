"""training.evaluation.node_profile on the shipped default: where its 16-box decoder spends time, by kernel."""

from training.evaluation.node_profile import profile_models


def test_default_decoder_moves_image_tokens_as_int8_at_run_time():
    """The runtime graph, not the IR: with the quantizer hoisted above the tokens-to-image Transpose
    (export_qcdq), at most one small float Transpose is left in the 16-box decoder (there were two, one of them
    16 x 256 x 4096: ~40 ms), and every profiled kind has a time and a node count."""
    decoder = profile_models(["litemedsam-int8-ptq"], repeats=1)["litemedsam-int8-ptq"]["decoder_16_boxes"]
    assert decoder["wall_ms"] > 0 and all(kind["nodes"] > 0 for kind in decoder["by_kind"].values())
    float_transposes = [kind for name, kind in decoder["by_kind"].items()
                        if name.startswith("Transpose") and name.lower().endswith("f32")]
    assert sum(kind["nodes"] for kind in float_transposes) <= 1
    assert decoder["runtime_nodes"]["Transpose"] > 0  # the count reads the runtime model
