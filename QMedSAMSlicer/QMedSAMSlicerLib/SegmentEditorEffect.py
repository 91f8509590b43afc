"""QMedSAM Segment Editor effect: drag a box in a slice view, refine it with clicks, preview, Apply or Cancel.

Qt wiring only. Everything done to MRML is mrml_effect.BoxEditor, tested on Slicer's own libraries (slicer-core);
click vs drag and polarity are click_prompts; keys and help text effect_keys; the shared engine engine_session.
"""

import os

import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from QMedSAMSlicerLib import effect_keys, effect_logic
from QMedSAMSlicerLib.click_prompts import click_is_positive, is_click
from QMedSAMSlicerLib.dependency_installer import ensure_openvino
from QMedSAMSlicerLib.engine_session import openvino_available
from QMedSAMSlicerLib.model_choice import resolve_model_name
from QMedSAMSlicerLib.mrml_effect import BoxEditor, user_message
from QMedSAMSlicerLib.mrml_scene import EffectAccess
from QMedSAMSlicerLib.settings import SESSION, saved_model, saved_threads
from QMedSAMSlicerLib.slice_range import AUTO
from QMedSAMSlicerLib.view_overlay import DragTracker


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    def __init__(self, scriptedEffect):
        scriptedEffect.name = "QMedSAM"  # not translated: modules find effects by name
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.editor = BoxEditor(EffectAccess(scriptedEffect))
        self.segmenterOverride = None  # the self-test's stand-in when OpenVINO is missing
        self.drag = DragTracker(scriptedEffect.addActor2D, scriptedEffect.removeActor2D)
        self.prefetcher = None
        self.busy = self.cancelRequested = False
        self.message = ""
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(50)
        self.pollTimer.timeout.connect(self.onPollPrefetch)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "../Resources/Icons/QMedSAMEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        return effect_keys.help_text()

    # -- options -----------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        def row(*widgets):
            layout = qt.QHBoxLayout()
            for widget in widgets:
                layout.addWidget(widget)
            return layout

        self.sliceModeButton, self.volumeModeButton = qt.QRadioButton("This slice"), qt.QRadioButton("3D")
        self.sliceModeButton.checked = True
        self.scriptedEffect.addLabeledOptionsWidget("Mode:", row(self.sliceModeButton, self.volumeModeButton))
        self.extentSpinBox = qt.QSpinBox()
        self.extentSpinBox.setRange(AUTO, 200)
        self.extentSpinBox.specialValueText, self.extentSpinBox.prefix, self.extentSpinBox.suffix = \
            "auto", "\u00b1 ", " slices"
        self.extentSpinBox.toolTip = "3D extent around the drawn slice; auto = the object is as deep as the box is wide"
        self.scriptedEffect.addLabeledOptionsWidget("3D extent:", self.extentSpinBox)
        self.positiveButton, self.negativeButton = qt.QRadioButton("Positive"), qt.QRadioButton("Negative")
        self.positiveButton.checked, self.negativeButton.toolTip = True, "What a click adds (Shift+click: the other)"
        self.scriptedEffect.addLabeledOptionsWidget("Clicks:", row(self.positiveButton, self.negativeButton))
        self.clickTypeGroup = qt.QButtonGroup()  # else all radio buttons of the options frame are one exclusive set
        for button in (self.positiveButton, self.negativeButton):
            self.clickTypeGroup.addButton(button)
        self.newSegmentCheckBox = qt.QCheckBox("Each box to a new segment")
        self.applyButton, self.cancelPreviewButton = qt.QPushButton("Apply"), qt.QPushButton("Cancel")
        self.progressBar, self.stopButton = qt.QProgressBar(), qt.QPushButton("Stop")
        self.progressBar.visible = self.stopButton.visible = False
        self.statusLabel, self.installButton = qt.QLabel(), qt.QPushButton("Install OpenVINO")
        self.statusLabel.wordWrap = True
        for item in (self.newSegmentCheckBox, row(self.applyButton, self.cancelPreviewButton),
                     row(self.progressBar, self.stopButton), self.statusLabel, self.installButton):
            self.scriptedEffect.addOptionsWidget(item)
        for button, slot in ((self.applyButton, self.onApply), (self.cancelPreviewButton, self.onCancelPreview),
                             (self.stopButton, self.onStop), (self.installButton, self.onInstall)):
            button.connect("clicked()", slot)
        for widget in (self.sliceModeButton, self.volumeModeButton, self.newSegmentCheckBox, self.negativeButton):
            widget.connect("toggled(bool)", self.updateMRMLFromGUI)
        self.extentSpinBox.connect("valueChanged(int)", self.updateMRMLFromGUI)

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Mode", effect_logic.SLICE_MODE)
        self.scriptedEffect.setParameterDefault("HalfExtent", AUTO)
        self.scriptedEffect.setParameterDefault("EachBoxNewSegment", 0)
        self.scriptedEffect.setParameterDefault("NegativeClicks", 0)

    def updateGUIFromMRML(self):
        volumeMode = self.scriptedEffect.parameter("Mode") == effect_logic.VOLUME_MODE
        negative = bool(self.scriptedEffect.integerParameter("NegativeClicks"))
        values = ((self.volumeModeButton, "checked", volumeMode), (self.sliceModeButton, "checked", not volumeMode),
                  (self.negativeButton, "checked", negative), (self.positiveButton, "checked", not negative),
                  (self.newSegmentCheckBox, "checked", bool(self.scriptedEffect.integerParameter("EachBoxNewSegment"))),
                  (self.extentSpinBox, "value", self.scriptedEffect.integerParameter("HalfExtent")))
        for widget, name, value in values:
            wasBlocked = widget.blockSignals(True)
            setattr(widget, name, value)
            widget.blockSignals(wasBlocked)
        self.extentSpinBox.enabled = volumeMode
        self.updateButtons()

    def updateMRMLFromGUI(self, *unused):
        mode = effect_logic.VOLUME_MODE if self.volumeModeButton.checked else effect_logic.SLICE_MODE
        self.scriptedEffect.setParameter("Mode", mode)
        self.scriptedEffect.setParameter("HalfExtent", self.extentSpinBox.value)
        self.scriptedEffect.setParameter("EachBoxNewSegment", int(self.newSegmentCheckBox.checked))
        self.scriptedEffect.setParameter("NegativeClicks", int(self.negativeButton.checked))

    def updateButtons(self):
        previewing = self.editor.session.state is effect_logic.State.PREVIEW
        self.applyButton.enabled = self.cancelPreviewButton.enabled = previewing and not self.busy
        self.installButton.visible = not openvino_available() and self.segmenterOverride is None
        self.statusLabel.text = self.message or SESSION.status()  # the last action's message wins

    def say(self, message):
        self.message = message
        self.updateButtons()

    # -- activation --------------------------------------------------------------------------------
    def activate(self):
        self.updateButtons()
        self.pollTimer.start()

    def deactivate(self):  # also what Escape does: the Segment Editor deactivates the effect
        self.cancelRequested = True  # a 3D run processing events stops at its next slice
        self.pollTimer.stop()
        if self.prefetcher is not None:
            self.prefetcher.cancel()
        self.drag.clear()
        self.onCancelPreview()

    def cleanup(self):
        self.pollTimer.stop()
        self.pollTimer.timeout.disconnect(self.onPollPrefetch)

    def createCursor(self, widget):
        return qt.QCursor(qt.Qt.CrossCursor)

    def sourceVolumeNodeChanged(self):
        reason = self.editor.geometry_changed()
        if reason:
            self.say(reason)

    def referenceGeometryChanged(self):
        self.sourceVolumeNodeChanged()

    # -- interaction -------------------------------------------------------------------------------
    def engineSettings(self):
        from qmedsam.catalogue import load_catalogue

        return resolve_model_name(load_catalogue(), saved_model()), saved_threads()

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        if self.busy:  # a 3D run is processing events between slices: no new boxes meanwhile
            return eventId != vtk.vtkCommand.MouseMoveEvent
        xy = callerInteractor.GetEventPosition()
        shift = callerInteractor.GetShiftKey()
        if eventId == vtk.vtkCommand.LeftButtonPressEvent and not (callerInteractor.GetControlKey()
                                                                   or callerInteractor.GetAltKey()):
            if shift:  # Shift+drag pans (Slicer's): left to the view; a Shift+click is taken on release
                self.drag.press(viewWidget, xy, band=False)
                return False
            if not openvino_available() and self.segmenterOverride is None:
                self.onInstall()
                return True
            if self.scriptedEffect.confirmCurrentSegmentVisible() in (self.scriptedEffect.NotConfirmed,
                                                                       self.scriptedEffect.ConfirmedWithDialog):
                return True
            self.drag.press(viewWidget, xy)
            return True
        if eventId == vtk.vtkCommand.MouseMoveEvent:
            if self.drag.move(viewWidget, xy):
                return True
            self.prefetchUnder(viewWidget, xy)
            return False
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and self.drag.start:
            ours, gesture = self.drag.banded, self.drag.release(viewWidget, xy)  # not ours: a Shift press
            if gesture and is_click(*gesture):
                self.onClick(viewWidget, gesture[1], click_is_positive(
                    bool(self.scriptedEffect.integerParameter("NegativeClicks")), shift=not ours))
            elif gesture and ours:
                self.onBoxDrawn(viewWidget, *gesture)
            return ours  # the view that took a Shift press takes its release too
        if eventId == vtk.vtkCommand.KeyPressEvent:
            action = effect_keys.action_for_key(callerInteractor.GetKeySym())
            if action:
                self.run(self.editor.perform, action, bool(self.scriptedEffect.integerParameter("EachBoxNewSegment")))
            return action is not None
        return False

    def processViewNodeEvents(self, callerViewNode, eventId, viewWidget):
        # Scrolling moves the slice without a mouse move: prefetch the new slice under the cursor.
        if callerViewNode and callerViewNode.IsA("vtkMRMLSliceNode") and not self.busy:
            self.prefetchUnder(viewWidget, viewWidget.sliceView().interactor().GetEventPosition())

    def prefetchUnder(self, viewWidget, xy):
        if self.segmenterOverride is not None or not openvino_available() or SESSION.last_error:
            return  # a failed model load is retried, and explained, when a box is drawn
        self.prefetcher = SESSION.prefetcher(*self.engineSettings())
        if self.prefetcher is None:  # first hover: the model compiles in the background, never on the main thread
            return self.updateButtons()
        try:
            self.editor.prefetch_under(self.prefetcher, viewWidget.mrmlSliceNode(), xy)
        except Exception:  # an optimisation only; drawing a box reports the same problem clearly
            self.editor.prefetched_at = None

    def onPollPrefetch(self):
        if self.prefetcher is not None and not self.busy:
            self.prefetcher.poll()
        if SESSION.loading is False and self.statusLabel.text != (self.message or SESSION.status()):
            self.updateButtons()  # the background load finished

    # -- segmenting, apply, cancel -------------------------------------------------------------------
    def run(self, step, *args, **kwargs):
        """Runs a BoxEditor step; its message, or its error's one line, goes to the status label."""
        try:
            self.say(step(*args, **kwargs))
            return True
        except Exception as error:  # QMedSAMError: the user's fix; anything else is still one line, not a trace
            self.say(user_message(error))
            return False

    def onBoxDrawn(self, viewWidget, start, end):
        """Segments the box dragged from `start` to `end` (XY pixels of the slice view `viewWidget`) into the
        preview. The mouse release calls this; so can scripts and the self-test. True when it was added."""
        mode = self.scriptedEffect.parameter("Mode")
        return self.segment(self.editor.segment_drag, mode == effect_logic.VOLUME_MODE, viewWidget.mrmlSliceNode(),
                            start, end, mode, self.scriptedEffect.integerParameter("HalfExtent"))

    def onClick(self, viewWidget, xy, positive):
        """Refines the last box with a click at `xy` (XY pixels of `viewWidget`), as a mouse click does."""
        return self.segment(self.editor.add_click, self.editor.last_box_is_3d, viewWidget.mrmlSliceNode(), xy, positive)

    def segment(self, step, showProgress, *args):
        """Runs a BoxEditor step that calls the engine: step(segmenter, *args, prefetcher, progress, cancel)."""
        self.busy, self.cancelRequested = True, False
        self.progressBar.visible = self.stopButton.visible = showProgress
        self.progressBar.value = 0
        self.say("Segmenting...")
        try:
            with slicer.util.WaitCursor():
                segmenter = self.segmenterOverride or SESSION.get(*self.engineSettings())
                return self.run(step, segmenter, *args, prefetcher=self.prefetcher, progress=self.onProgress,
                                cancel=lambda: self.cancelRequested)
        except Exception as error:  # the engine could not be loaded
            self.say(user_message(error))
            return False
        finally:
            self.busy = False
            self.progressBar.visible = self.stopButton.visible = False
            self.updateButtons()

    def onProgress(self, done, total):
        self.progressBar.maximum, self.progressBar.value = total, done
        slicer.app.processEvents()  # keeps the UI and the Stop button alive between slices

    def onStop(self):
        self.cancelRequested = True

    def onInstall(self):
        ensure_openvino(parent=slicer.util.mainWindow())
        self.updateButtons()

    def onApply(self):
        self.run(self.editor.apply, bool(self.scriptedEffect.integerParameter("EachBoxNewSegment")))

    def onCancelPreview(self):
        self.run(self.editor.cancel)
