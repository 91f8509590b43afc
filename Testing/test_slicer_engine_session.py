"""The shared engine: built once per model/thread setting, clear status text."""

import sys

import pytest
import slicer_lib  # noqa: F401
from qmedsam.errors import QMedSAMError
from QMedSAMSlicerLib.engine_session import EngineSession, openvino_available


def test_segmenter_is_reused_until_settings_change():
    session = EngineSession()
    assert "loaded when the effect is first used" in session.status()
    first = session.get(None, 2)
    assert session.get(None, 2) is first
    second = session.get(None, 1)
    assert second is not first
    assert session.status().startswith(f"Model {second.entry.name} loaded (1 threads); 0 slices encoded")


def test_without_openvino_the_status_asks_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # how find_spec sees a package that is not installed
    assert not openvino_available()
    assert "press 'Install OpenVINO'" in EngineSession().status()


def test_errors_are_reported_in_the_status():
    session = EngineSession()
    with pytest.raises(QMedSAMError, match="Unknown model 'no-such-model'"):
        session.get("no-such-model", 1)
    assert session.status().startswith("Engine error: Unknown model")


def test_background_loading_compiles_off_the_calling_thread(tmp_path):
    session = EngineSession(compile_cache_dir=tmp_path)
    assert session.start_loading(None, 1)
    assert not session.start_loading(None, 1)  # already loading
    assert session.ready(None, 2) is None
    loaded = session.get(None, 1)  # waits for the background thread
    assert session.ready(None, 1) is loaded and not session.loading
    assert not session.start_loading(None, 1)  # already loaded
    assert any((tmp_path / "openvino").iterdir())  # the compiled-model cache went where it was told


def test_prefetcher_waits_for_the_load_and_follows_the_loaded_model(tmp_path):
    session = EngineSession(compile_cache_dir=tmp_path)
    assert session.prefetcher(None, 1) is None  # first hover: the load starts, nothing waits for it
    assert not session.start_loading(None, 1)  # it is already loading
    session.get(None, 1)
    first = session.prefetcher(None, 1)
    assert first.segmenter is session.segmenter and session.prefetcher(None, 1) is first
    session.get(None, 2)  # other threads: another Segmenter, so another encoder on it
    second = session.prefetcher(None, 2)
    assert second is not first and second.segmenter is session.segmenter


def test_background_loading_error_is_raised_by_get():
    session = EngineSession()
    session.start_loading("no-such-model", 1)
    with pytest.raises(QMedSAMError, match="Unknown model 'no-such-model'"):
        session.get("no-such-model", 1)
    assert session.status().startswith("Engine error: Unknown model")


def test_inside_slicer_the_compile_cache_goes_under_slicers_cache_folder(tmp_path):
    from types import SimpleNamespace

    from QMedSAMSlicerLib.engine_session import openvino_cache_dir, slicer_cache_dir

    # slicer.app is Qt's application object; only its cachePath property is used
    assert openvino_cache_dir(SimpleNamespace(cachePath=str(tmp_path))) == tmp_path / "QMedSAM"
    assert slicer_cache_dir() is None  # outside Slicer (no slicer, or slicer-core without an application)
