"""INT8 by default when shipped, FP32 otherwise; a saved choice wins while it exists."""

from types import SimpleNamespace

import slicer_lib  # noqa: F401
from qmedsam.catalogue import load_catalogue
from QMedSAMSlicerLib.model_choice import default_model_name, model_label, resolve_model_name


def entry(name, precision, default=False, calibration="none"):
    return SimpleNamespace(name=name, precision=precision, default=default, calibration=calibration)


def test_int8_is_preferred_over_the_fp32_default():
    entries = [entry("fp32", "fp32", default=True), entry("int8-dfq", "int8"), entry("int8-qat", "int8")]
    assert default_model_name(entries) == "int8-dfq"
    entries[2] = entry("int8-qat", "int8", default=True)
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
