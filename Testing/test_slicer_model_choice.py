"""The catalogue's default (INT8 once it is marked default), never an unmarked baseline; a saved choice wins."""

from types import SimpleNamespace

import slicer_lib  # noqa: F401
from qmedsam.catalogue import load_catalogue
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


def test_shipped_catalogue_has_a_usable_default():
    entries = load_catalogue()
    name = default_model_name(entries)
    assert name in [e.name for e in entries]
    assert model_label(entry("m", "int8", calibration="qat")) == "m (INT8, calibration: qat)"
