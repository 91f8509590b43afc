"""QMedSAMSlicer: registers the QMedSAM Segment Editor effect and shows the engine's settings and status."""

import os

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

ABOUT = """<p><b>QMedSAM</b>: box-prompt segmentation with LiteMedSAM, run by OpenVINO on this computer's CPU.
No GPU, no server, no torch; no image leaves this computer.</p>
<p>Use: Segment Editor &rarr; <b>QMedSAM</b> effect &rarr; drag a box around a structure in any slice view.
<b>This slice</b> previews the mask in about a second (at once if the mouse was already on that slice);
<b>3D</b> propagates it through &plusmn;N slices with a progress bar and Stop. Apply writes the preview into
the selected segment (Ctrl+Z undoes it).</p>
<p>Images are windowed as the user sees them: the display window/level for CT-like data, the 0.5&ndash;99.5
percentiles of non-zero voxels otherwise.</p>
<p>Models: the default INT8 model ships with the extension and works offline. The FP32 reference and the
data-free INT8 model are downloaded only when you click Download&hellip; (you are asked first; every file is
checked against its sha256), or imported from a .zip on computers without internet access. Nothing else
goes over the network, and OpenVINO's usage telemetry is kept off.</p>
<p>LiteMedSAM weights: Apache-2.0, by the MedSAM authors (bowang-lab/MedSAM, LiteMedSAM branch).</p>
<p>Documentation: <a href="https://github.com/qmedsam/SlicerQMedSAM#readme">README</a>,
<a href="https://github.com/qmedsam/SlicerQMedSAM/blob/main/docs/models.md">models</a>.</p>"""


class QMedSAMSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "QMedSAM"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["QMedSAMSlicer team (QMedSAMSlicer project)"]
        self.parent.helpText = ("Settings of the QMedSAM Segment Editor effect: box-prompt LiteMedSAM segmentation "
                                "on the CPU with OpenVINO, and its models (download, import, remove). "
                                'See the <a href="https://github.com/qmedsam/SlicerQMedSAM#readme">documentation</a>.')
        self.parent.acknowledgementText = ("LiteMedSAM (Apache-2.0) by the MedSAM authors; OpenVINO by Intel.")
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)

    def registerEditorEffect(self):
        import QMedSAMSlicerLib
        import qSlicerSegmentationsEditorEffectsPythonQt as effects
        from QMedSAMSlicerLib.SegmentEditorEffect import SegmentEditorEffect

        # setPythonSource (and clone) take the class from sys.modules["QMedSAMSlicerLib"].SegmentEditorEffect;
        # without it they load the file as a plain module named QMedSAMSlicerLib, which hides the package and
        # breaks the effect's own `from QMedSAMSlicerLib import ...`.
        QMedSAMSlicerLib.SegmentEditorEffect = SegmentEditorEffect
        effect = effects.qSlicerSegmentEditorScriptedEffect(None)
        source = os.path.join(os.path.dirname(__file__), "QMedSAMSlicerLib", "SegmentEditorEffect.py")
        effect.setPythonSource(source.replace("\\", "/"))
        effect.self().register()


class QMedSAMSlicerWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.ui = slicer.util.childWidgetVariables(
            self._load(self.resourcePath("UI/QMedSAMSlicer.ui")))
        self.ui.aboutBrowser.setHtml(ABOUT)
        self.ui.installButton.connect("clicked()", self.onInstall)
        self.ui.loadButton.connect("clicked()", self.onLoad)
        self.ui.segmentEditorButton.connect("clicked()", lambda: slicer.util.selectModule("SegmentEditor"))
        self.ui.downloadButton.connect("clicked()", self.onDownload)
        self.ui.importButton.connect("clicked()", self.onImport)
        self.ui.removeButton.connect("clicked()", self.onRemove)
        self.download = None  # the BackgroundFetch while one runs
        self.populate()
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onSettingsChanged)
        self.ui.threadsSpinBox.connect("valueChanged(int)", self.onSettingsChanged)
        self.layout.addStretch(1)

    def _load(self, path):
        widget = slicer.util.loadUI(path)
        self.layout.addWidget(widget)
        return widget

    def populate(self):
        from qmedsam.catalogue import load_catalogue
        from qmedsam.errors import QMedSAMError
        from QMedSAMSlicerLib import settings
        from QMedSAMSlicerLib.model_choice import panel_label, panel_models, resolve_model_name

        self.catalogueError = ""
        try:
            self.entries = {e.name: e for e in load_catalogue()}
        except QMedSAMError as error:
            self.entries = {}
            self.catalogueError = str(error)  # shown by updateStatus, which would otherwise overwrite it
        chosen = resolve_model_name(list(self.entries.values()), settings.saved_model())
        self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        for entry in panel_models(list(self.entries.values())):
            self.ui.modelComboBox.addItem(panel_label(entry), entry.name)
            if entry.name == chosen:
                self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.count - 1)
        self.ui.modelComboBox.blockSignals(False)
        self.ui.threadsSpinBox.value = settings.saved_threads()
        self.updateModelButtons()
        self.updateStatus()

    def selectedEntry(self):
        return self.entries.get(self.ui.modelComboBox.currentData)

    def updateModelButtons(self):
        from qmedsam.model_store import is_user_model
        from QMedSAMSlicerLib.model_choice import purpose

        entry = self.selectedEntry()
        self.ui.modelInfoLabel.text = purpose(entry) if entry else ""
        busy = self.download is not None
        self.ui.downloadButton.enabled = bool(entry) and not entry.present and not busy
        self.ui.removeButton.enabled = bool(entry) and entry.present and is_user_model(entry) and not busy
        self.ui.importButton.enabled = not busy

    def updateStatus(self):
        from QMedSAMSlicerLib.engine_session import openvino_available
        from QMedSAMSlicerLib.settings import SESSION

        self.ui.statusLabel.text = self.catalogueError or SESSION.status()
        self.ui.installButton.visible = not openvino_available()
        self.ui.loadButton.enabled = openvino_available()

    def onSettingsChanged(self, *unused):
        from QMedSAMSlicerLib import settings

        entry = self.selectedEntry()
        if entry is None or entry.present:  # a model that is not downloaded yet is not saved as the choice
            settings.save(self.ui.modelComboBox.currentData, self.ui.threadsSpinBox.value)
        self.updateModelButtons()
        self.updateStatus()

    def onDownload(self):
        from qmedsam.model_store import file_url
        from QMedSAMSlicerLib.model_choice import download_question
        from QMedSAMSlicerLib.model_download import BackgroundFetch

        entry = self.selectedEntry()
        if entry is None or self.download is not None:
            return
        url = file_url(entry, "").rstrip("/") + "/"
        if not slicer.util.confirmOkCancelDisplay(download_question(entry, url, entry.folder),
                                                  windowTitle="QMedSAM", parent=slicer.util.mainWindow()):
            return
        self.download = BackgroundFetch(entry).start()
        self.progress = qt.QProgressDialog(f"Downloading {entry.name}...", "Cancel", 0, 1000,
                                           slicer.util.mainWindow())
        self.progress.windowTitle = "QMedSAM"
        self.progress.minimumDuration = 0
        self.progressTimer = qt.QTimer()
        self.progressTimer.connect("timeout()", self.onDownloadProgress)
        self.progressTimer.start(200)
        self.updateModelButtons()

    def onDownloadProgress(self):
        job = self.download
        if self.progress.wasCanceled and not job.cancelled:
            job.cancel()
        self.progress.value = int(1000 * job.fraction)
        if not job.finished:
            return
        self.progressTimer.stop()
        self.progress.close()
        self.download = None
        if job.error:
            slicer.util.errorDisplay(job.error, windowTitle="QMedSAM")
        self.populate()

    def onImport(self):
        from qmedsam.catalogue import load_catalogue
        from qmedsam.errors import QMedSAMError
        from qmedsam.model_store import import_models

        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Import QMedSAM models", "",
                                              "Model archive (*.zip)")
        if not path:
            return
        try:
            with slicer.util.WaitCursor():
                names = import_models(path, load_catalogue())
        except QMedSAMError as error:
            slicer.util.errorDisplay(str(error), windowTitle="QMedSAM")
        else:
            slicer.util.infoDisplay("Imported: " + ", ".join(names), windowTitle="QMedSAM")
        self.populate()

    def onRemove(self):
        from qmedsam.errors import QMedSAMError
        from qmedsam.model_store import remove

        # A loaded engine holds the model's bytes, not its files: it keeps working; the next load falls back to
        # the default because the removed model is no longer present (model_choice.resolve_model_name).
        entry = self.selectedEntry()
        if entry is None or not slicer.util.confirmOkCancelDisplay(
                f"Delete the downloaded model {entry.name} ({entry.folder})?", windowTitle="QMedSAM"):
            return
        try:
            remove(entry)
        except QMedSAMError as error:
            slicer.util.errorDisplay(str(error), windowTitle="QMedSAM")
        self.populate()

    def onInstall(self):
        from QMedSAMSlicerLib.dependency_installer import ensure_openvino

        ensure_openvino(parent=slicer.util.mainWindow())
        self.updateStatus()

    def onLoad(self):
        from QMedSAMSlicerLib import settings

        try:
            with slicer.util.WaitCursor():
                settings.SESSION.get(self.ui.modelComboBox.currentData, self.ui.threadsSpinBox.value)
        except Exception as error:
            slicer.util.errorDisplay(f"Could not load the model: {error}")
        self.updateStatus()

    def enter(self):
        self.updateStatus()


class QMedSAMSlicerLogic(ScriptedLoadableModuleLogic):
    """All logic lives in QMedSAMSlicerLib (Slicer-free modules) and the qmedsam engine."""


class QMedSAMSlicerTest(ScriptedLoadableModuleTest):
    """Runs the effect self-test (Testing/Python/QMedSAMSlicerSelfTest.py) from the Reload & Test button."""

    def runTest(self):
        import importlib.util

        path = os.path.join(os.path.dirname(__file__), "Testing", "Python", "QMedSAMSlicerSelfTest.py")
        spec = importlib.util.spec_from_file_location("QMedSAMSlicerSelfTest", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        test = module.QMedSAMSlicerSelfTestTest()
        test.runTest()
