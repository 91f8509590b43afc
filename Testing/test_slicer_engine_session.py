"""The shared engine: built once per model/thread setting, clear status text."""

import slicer_lib  # noqa: F401
from QMedSAMSlicerLib.engine_session import EngineSession, openvino_available


def test_segmenter_is_reused_until_settings_change():
    session = EngineSession()
    assert "loaded when the effect is first used" in session.status()
    first = session.get(None, 2)
    assert session.get(None, 2) is first
    assert session.get(None, 1) is not first
    assert "loaded (1 threads)" in session.status()
    assert openvino_available()


def test_errors_are_reported_in_the_status():
    session = EngineSession()
    try:
        session.get("no-such-model", 1)
    except Exception as error:
        assert "Unknown model" in str(error)
    assert session.status().startswith("Engine error: Unknown model")
