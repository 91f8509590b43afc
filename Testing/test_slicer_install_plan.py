"""Installing openvino into Slicer's Python: version range by Python, numpy pinned, clear failures."""

import pytest
import slicer_lib  # noqa: F401
from QMedSAMSlicerLib.install_plan import UnsupportedPython, confirmation_text, failure_text, make_plan


@pytest.mark.parametrize("slicer, python, numpy, requirement", [
    ("5.6", (3, 9, 10), "1.26.4", "openvino>=2024.4,<2025.4"),
    ("5.8", (3, 9, 10), "1.26.4", "openvino>=2024.4,<2025.4"),
    ("5.10", (3, 12, 10), "2.0.2", "openvino>=2024.4,<2027"),
    ("5.12", (3, 12, 10), "2.4.6", "openvino>=2024.4,<2027"),
])
def test_plan_by_slicer_python(slicer, python, numpy, requirement):
    plan = make_plan(python, numpy, has_packaging_module=slicer == "5.12")
    assert plan.requirement == requirement
    assert plan.constraints == (f"numpy=={numpy}",)
    assert plan.use_packaging_module == (slicer == "5.12")
    assert plan.pip_arguments("c.txt") == [requirement, "-c", "c.txt"]
    assert plan.constraints_text() == f"numpy=={numpy}\n"


def test_local_version_tags_are_stripped_and_missing_numpy_needs_no_constraint():
    assert make_plan((3, 12), "2.0.2+mkl", False).constraints == ("numpy==2.0.2",)
    plan = make_plan((3, 12), None, False)
    assert plan.constraints == () and plan.pip_arguments("c.txt") == [plan.requirement]


def test_unsupported_python_says_which_slicer_to_use():
    with pytest.raises(UnsupportedPython, match="Slicer 5.6 or newer"):
        make_plan((3, 8, 0), "1.24.0", False)


def test_messages_say_what_happens_and_how_to_fix():
    plan = make_plan((3, 9), "1.26.4", False)
    assert "numpy==1.26.4" in confirmation_text(plan) and "no image leaves" in confirmation_text(plan)
    message = failure_text(plan, "ERROR: ResolutionImpossible: numpy conflict")
    assert "ResolutionImpossible" in message and "Slicer to 5.10" in message and "keeps working" in message
    assert "proxy" in failure_text(plan, "Connection refused")
    assert "pip_install('openvino" in failure_text(plan, "")
