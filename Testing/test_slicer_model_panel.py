"""The module panel's model list and downloads (the Slicer-free logic; the Qt wiring only calls it).

Downloads run against the loopback server of test_model_store (real HTTP, real files, real threads).
"""

import os
from types import SimpleNamespace

import pytest
import slicer_lib  # noqa: F401
from qmedsam.catalogue import load_catalogue
from QMedSAMSlicerLib.model_choice import (
    PANEL_MODELS,
    download_question,
    panel_label,
    panel_models,
    purpose,
    resolve_model_name,
)
from QMedSAMSlicerLib.model_download import BackgroundFetch
from test_model_store import NAME, catalogue, entry, left_behind, server  # noqa: F401 (fixtures)


def test_panel_offers_the_default_reference_and_data_free_models_only():
    entries = load_catalogue()
    names = [e.name for e in panel_models(entries)]
    default = next(e.name for e in entries if e.default)
    assert names[0] == default
    assert set(names) == {default, "litemedsam-fp32", "litemedsam-int8-dfq"}
    assert "litemedsam-nncf-int8" not in names and "litemedsam-int8-qat" not in names  # research: CLI only
    for model in panel_models(entries):
        assert purpose(model) == PANEL_MODELS[model.name] and len(purpose(model)) < 110  # one line


def test_an_absent_choice_falls_back_to_the_default_and_shows_its_size():
    present = SimpleNamespace(name="int8", precision="int8", calibration="ptq", default=True, present=True)
    absent = SimpleNamespace(name="fp32", precision="fp32", calibration="none", default=False, present=False,
                             total_bytes=38_900_000)
    assert resolve_model_name([present, absent], "fp32") == "int8"
    absent.present = True
    assert resolve_model_name([present, absent], "fp32") == "fp32"
    absent.present = False
    assert panel_label(absent) == "fp32 (FP32), not downloaded (39 MB)"
    assert panel_label(present) == "int8 (INT8, calibration: ptq)"


def test_the_question_names_size_source_and_destination(catalogue):  # noqa: F811
    folder, user = catalogue
    question = download_question(entry(folder), "https://example.org/served-int8/", entry(folder).folder)
    assert f"{entry(folder).total_bytes / 1e6:.1f} MB" in question
    assert "https://example.org/served-int8/" in question and str(user / NAME) in question
    assert "sha256" in question


def test_background_download_reports_progress_and_installs(server, catalogue):  # noqa: F811
    folder, user = catalogue
    job = BackgroundFetch(entry(folder), base_url=server.url)
    assert not job.finished and job.fraction == 0.0
    job.start().wait(60)
    assert job.finished and job.error == "" and job.fraction == 1.0
    assert job.folder == user / NAME and entry(folder).present


def test_background_download_can_be_cancelled_and_reports_errors(server, catalogue):  # noqa: F811
    folder, user = catalogue
    job = BackgroundFetch(entry(folder), base_url=server.url)
    job.cancel()
    job.start().wait(60)
    assert job.finished and job.cancelled and job.error == "" and job.folder is None
    assert left_behind(user) == []
    server.modes["decoder.xml"] = "404"
    job = BackgroundFetch(entry(folder), base_url=server.url).start()
    job.wait(60)
    assert "HTTP 404" in job.error and "\n" not in job.error and left_behind(user) == []


@pytest.fixture(scope="module")
def qt_app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    widgets = pytest.importorskip("PySide6.QtWidgets")
    return widgets.QApplication.instance() or widgets.QApplication([])


def test_panel_ui_has_the_model_buttons(qt_app):
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader

    handle = QFile(str(slicer_lib.MODULE_DIR / "Resources" / "UI" / "QMedSAMSlicer.ui"))
    assert handle.open(QFile.ReadOnly)
    widget = QUiLoader().load(handle)
    handle.close()
    texts = {name: widget.findChild(object, name).text() for name in ("downloadButton", "importButton", "removeButton")}
    assert texts == {"downloadButton": "Download…", "importButton": "Import from file…", "removeButton": "Remove"}
    assert widget.findChild(object, "modelInfoLabel") is not None
