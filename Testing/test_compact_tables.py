"""Folded tables stored as the subgraphs that compute them: same outputs, smaller files."""

import numpy as np
import openvino as ov
import pytest
import torch
from qmedsam.catalogue import find_model, load_catalogue

from training.litemedsam import load_litemedsam
from training.quantization.compact_tables import MIN_ELEMENTS, compact_tables
from training.quantization.export_openvino import convert

F32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
pytestmark = pytest.mark.usefixtures("fp32_model")  # built locally from the pinned checkpoint (conftest)


def _large_float_constants(graph: ov.Model) -> list:
    return [list(op.get_output_shape(0)) for op in graph.get_ops() if op.get_type_name() == "Constant"
            and op.get_output_element_type(0) in (ov.Type.f32, ov.Type.f16)
            and np.prod(list(op.get_output_shape(0))) >= MIN_ELEMENTS]


@pytest.mark.slow  # converts the model to OpenVINO twice: over a minute
def test_compacting_keeps_outputs_bit_identical():
    torch.set_num_threads(2)
    model = load_litemedsam()
    model.mask_decoder.fold_for_inference(True)
    encoder, decoder = convert(model)
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, 256, 256), dtype=np.float32)
    boxes = np.array([[10, 20, 120, 140], [30, 40, 200, 220]], np.float32)
    core = ov.Core()
    embedding = core.compile_model(encoder, "CPU", F32)(image)[0]
    before = core.compile_model(decoder, "CPU", F32)([embedding, boxes])
    replaced = compact_tables(encoder, model) + compact_tables(decoder, model)
    assert sum("attention bias" in r for r in replaced) == 6  # the 14x14-window blocks of stage 3
    assert sum("positional encoding" in r for r in replaced) == 1
    assert compact_tables(encoder, model) == [] and compact_tables(decoder, model) == []  # none left
    after = core.compile_model(decoder, "CPU", F32)([embedding, boxes])
    np.testing.assert_array_equal(core.compile_model(encoder, "CPU", F32)(image)[0], embedding)
    for name in (0, 1):  # masks and IoU: the same bits, not merely close
        np.testing.assert_array_equal(after[name], before[name])


def test_shipped_models_hold_no_folded_tables():
    core = ov.Core()
    fp32 = find_model("litemedsam-fp32")
    model = load_litemedsam()
    for part in ("encoder", "decoder"):
        assert compact_tables(core.read_model(fp32.folder / f"{part}.xml"), model) == []
    for entry in _our_int8_models():  # int8 weights: any large float constant left would be a table
        for part in ("encoder", "decoder"):
            assert _large_float_constants(core.read_model(entry.folder / f"{part}.xml")) == [], entry.name


def _our_int8_models():
    # Models not kept in git (QAT, data-free) are checked where they were fetched or built; the default always is.
    return [e for e in load_catalogue() if e.precision == "int8" and e.calibration in ("ptq", "qat") and e.present]


def test_our_int8_models_are_at_most_a_third_of_fp32():
    """The QAT issue's size bar, for the models of our Brevitas pipeline (not NNCF's baseline)."""
    def size(entry):
        return sum((entry.folder / file).stat().st_size for file in entry.record["sha256"])

    fp32 = size(find_model("litemedsam-fp32"))
    ours = _our_int8_models()
    assert ours
    for entry in ours:
        assert size(entry) <= fp32 / 3, f"{entry.name}: {size(entry) / fp32:.3f} of FP32"
