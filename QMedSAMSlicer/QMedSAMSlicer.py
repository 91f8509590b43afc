"""QMedSAMSlicer: registers the QMedSAM Segment Editor effect and shows the engine's settings and status."""

import os

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
<p>LiteMedSAM weights: Apache-2.0, by the MedSAM authors (bowang-lab/MedSAM, LiteMedSAM branch).</p>"""


class QMedSAMSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "QMedSAM"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["QMedSAMSlicer developers"]
        self.parent.helpText = ("Settings of the QMedSAM Segment Editor effect: box-prompt LiteMedSAM segmentation "
                                "on the CPU with OpenVINO.")
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
        from QMedSAMSlicerLib.model_choice import model_label, resolve_model_name

        self.catalogueError = ""
        try:
            entries = load_catalogue()
        except QMedSAMError as error:
            entries = []
            self.catalogueError = str(error)  # shown by updateStatus, which would otherwise overwrite it
        chosen = resolve_model_name(entries, settings.saved_model())
        self.ui.modelComboBox.clear()
        for entry in entries:
            self.ui.modelComboBox.addItem(model_label(entry), entry.name)
            if entry.name == chosen:
                self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.count - 1)
        self.ui.threadsSpinBox.value = settings.saved_threads()
        self.updateStatus()

    def updateStatus(self):
        from QMedSAMSlicerLib.engine_session import openvino_available
        from QMedSAMSlicerLib.settings import SESSION

        self.ui.statusLabel.text = self.catalogueError or SESSION.status()
        self.ui.installButton.visible = not openvino_available()
        self.ui.loadButton.enabled = openvino_available()

    def onSettingsChanged(self, *unused):
        from QMedSAMSlicerLib import settings

        settings.save(self.ui.modelComboBox.currentData, self.ui.threadsSpinBox.value)
        self.updateStatus()

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
