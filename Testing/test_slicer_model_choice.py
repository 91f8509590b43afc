"""The catalogue's default (INT8 once it is marked default), never an unmarked baseline; a saved choice wins."""

from types import SimpleNamespace

import slicer_lib  # noqa: F401
from qmedsam.catalogue import find_model, load_catalogue
from QMedSAMSlicerLib.model_choice import default_model_name, model_label, resolve_model_name


def entry(name, precision, default=False, calibration="none"):
    return SimpleNamespace(name=name, precision=precision, default=default, calibration=calibration)


def test_int8_is_used_when_marked_default_and_baselines_are_not():
    entries = [entry("fp32", "fp32", default=True), entry("int8-nncf", "int8"), entry("int8-qat", "int8")]
    assert default_model_name(entries) == "fp32"
    entries = [entry("fp32", "fp32"), entry("int8-nncf", "int8"), entry("int8-qat", "int8", default=True)]
    assert default_model_name(entries) == "int8-qat"


def test_fp32_without_int8_and_saved_choices():
    entries = [entry("a", "fp32"), entry("b", "fp32", default=True)]
    assert default_model_name(entries) == "b"
    assert resolve_model_name(entries, "a") == "a"
    assert resolve_model_name(entries, "gone") == "b"
    assert default_model_name([]) is None


def test_without_a_marked_default_the_first_entry_is_used():
    assert default_model_name([entry("a", "fp32"), entry("b", "int8")]) == "a"


def test_shipped_default_is_the_one_marked_int8_model_and_the_engine_agrees():
    entries = load_catalogue()
    marked = [e for e in entries if e.default]
    assert len(marked) == 1 and marked[0].precision == "int8"
    assert default_model_name(entries) == marked[0].name == find_model().name  # the effect and the CLI alike


def test_model_label_names_precision_and_calibration():
    assert model_label(entry("m", "int8", calibration="qat")) == "m (INT8, calibration: qat)"
    assert model_label(entry("f", "fp32")) == "f (FP32)"
