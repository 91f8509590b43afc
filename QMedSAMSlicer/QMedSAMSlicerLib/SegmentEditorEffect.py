"""QMedSAM Segment Editor effect: drag a box in a slice view, preview the mask, Apply or Cancel.

Wiring only: geometry (box_geometry), extent (slice_range), windowing (intensity), the engine call, the
preview state and the order of Apply's steps (effect_logic), prefetch (background_encoder) and installing
(dependency_installer) are decided elsewhere and tested without Slicer.
"""

import os

import numpy as np
import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect
from vtk.util import numpy_support

from QMedSAMSlicerLib import effect_logic
from QMedSAMSlicerLib.box_geometry import BoxError, box_from_drag, slice_frame, slice_index_at
from QMedSAMSlicerLib.dependency_installer import ensure_openvino
from QMedSAMSlicerLib.engine_session import openvino_available
from QMedSAMSlicerLib.intensity import choose_window
from QMedSAMSlicerLib.model_choice import resolve_model_name
from QMedSAMSlicerLib.settings import SESSION, saved_model, saved_threads
from QMedSAMSlicerLib.slice_range import AUTO, auto_half_extent

PREVIEW_COLOR = (1.0, 0.85, 0.0)
TILT_WARNING_DEGREES = 15.0


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    def __init__(self, scriptedEffect):
        scriptedEffect.name = "QMedSAM"  # not translated: modules find effects by name
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.session = effect_logic.PreviewSession()
        self.rubberBands = {}
        self.dragStart = None  # (view widget, xy)
        self.previewNode = None
        self.prefetcher = None
        self.prefetchedAt = None
        self.imageCache = None  # (key, volume (k, j, i), IntensityWindow)
        self.busy = False
        self.cancelRequested = False
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
        return ("<html>Segment with LiteMedSAM from a box, on this computer's CPU.<p><ul style='margin: 0'>"
                "<li><b>Left-drag</b> in a slice view: box around the structure; the result is previewed."
                "<li>More boxes add to the preview. <b>x</b>: drop the last box."
                "<li><b>Apply</b> (or Enter) writes the preview into the segment (Ctrl+Z undoes it); "
                "<b>Cancel</b> (or Escape) discards it."
                "<li><b>3D</b> mode propagates the box through &plusmn; N slices (auto: as deep as wide)."
                "</ul>")

    # -- options -----------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        self.sliceModeButton = qt.QRadioButton("This slice")
        self.volumeModeButton = qt.QRadioButton("3D")
        self.sliceModeButton.checked = True
        modeRow = qt.QHBoxLayout()
        modeRow.addWidget(self.sliceModeButton)
        modeRow.addWidget(self.volumeModeButton)
        self.scriptedEffect.addLabeledOptionsWidget("Mode:", modeRow)

        self.extentSpinBox = qt.QSpinBox()
        self.extentSpinBox.setRange(AUTO, 200)
        self.extentSpinBox.setSpecialValueText("auto")
        self.extentSpinBox.setPrefix("\u00b1 ")
        self.extentSpinBox.setSuffix(" slices")
        self.extentSpinBox.setToolTip("3D extent around the drawn slice; auto = the object is as deep as the box "
                                      "is wide")
        self.scriptedEffect.addLabeledOptionsWidget("3D extent:", self.extentSpinBox)

        self.newSegmentCheckBox = qt.QCheckBox("Each box to a new segment")
        self.scriptedEffect.addOptionsWidget(self.newSegmentCheckBox)

        self.applyButton = qt.QPushButton("Apply")
        self.cancelPreviewButton = qt.QPushButton("Cancel")
        buttons = qt.QHBoxLayout()
        buttons.addWidget(self.applyButton)
        buttons.addWidget(self.cancelPreviewButton)
        self.scriptedEffect.addOptionsWidget(buttons)

        self.progressBar = qt.QProgressBar()
        self.stopButton = qt.QPushButton("Stop")
        progressRow = qt.QHBoxLayout()
        progressRow.addWidget(self.progressBar)
        progressRow.addWidget(self.stopButton)
        self.progressWidget = qt.QWidget()
        self.progressWidget.setLayout(progressRow)
        self.progressWidget.visible = False
        self.scriptedEffect.addOptionsWidget(self.progressWidget)

        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        self.installButton = qt.QPushButton("Install OpenVINO")
        self.scriptedEffect.addOptionsWidget(self.statusLabel)
        self.scriptedEffect.addOptionsWidget(self.installButton)

        self.applyButton.connect("clicked()", self.onApply)
        self.cancelPreviewButton.connect("clicked()", self.onCancelPreview)
        self.stopButton.connect("clicked()", self.onStop)
        self.installButton.connect("clicked()", self.onInstall)
        for widget in (self.sliceModeButton, self.volumeModeButton, self.newSegmentCheckBox):
            widget.connect("toggled(bool)", self.updateMRMLFromGUI)
        self.extentSpinBox.connect("valueChanged(int)", self.updateMRMLFromGUI)

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Mode", effect_logic.SLICE_MODE)
        self.scriptedEffect.setParameterDefault("HalfExtent", AUTO)
        self.scriptedEffect.setParameterDefault("EachBoxNewSegment", 0)

    def updateGUIFromMRML(self):
        volumeMode = self.scriptedEffect.parameter("Mode") == effect_logic.VOLUME_MODE
        for widget, value in ((self.volumeModeButton, volumeMode), (self.sliceModeButton, not volumeMode),
                              (self.newSegmentCheckBox, self.scriptedEffect.integerParameter("EachBoxNewSegment"))):
            wasBlocked = widget.blockSignals(True)
            widget.checked = bool(value)
            widget.blockSignals(wasBlocked)
        wasBlocked = self.extentSpinBox.blockSignals(True)
        self.extentSpinBox.value = self.scriptedEffect.integerParameter("HalfExtent")
        self.extentSpinBox.blockSignals(wasBlocked)
        self.extentSpinBox.enabled = volumeMode
        self.updateButtons()

    def updateMRMLFromGUI(self, *unused):
        mode = effect_logic.VOLUME_MODE if self.volumeModeButton.checked else effect_logic.SLICE_MODE
        self.scriptedEffect.setParameter("Mode", mode)
        self.scriptedEffect.setParameter("HalfExtent", self.extentSpinBox.value)
        self.scriptedEffect.setParameter("EachBoxNewSegment", int(self.newSegmentCheckBox.checked))

    def updateButtons(self):
        previewing = self.session.state is effect_logic.State.PREVIEW
        self.applyButton.enabled = previewing and not self.busy
        self.cancelPreviewButton.enabled = previewing and not self.busy
        self.installButton.visible = not openvino_available()
        self.statusLabel.text = SESSION.status()

    # -- activation --------------------------------------------------------------------------------
    def activate(self):
        self.updateButtons()
        if openvino_available():
            self.pollTimer.start()

    def deactivate(self):
        self.cancelRequested = True  # a 3D run processing events (e.g. Escape pressed) stops at its next slice
        self.pollTimer.stop()
        if self.prefetcher is not None:
            self.prefetcher.cancel()
        for viewWidget, band in self.rubberBands.items():
            self.scriptedEffect.removeActor2D(viewWidget, band.actor)
        self.rubberBands = {}
        self.dragStart = None
        self.onCancelPreview()

    def cleanup(self):
        self.pollTimer.stop()
        self.pollTimer.timeout.disconnect(self.onPollPrefetch)

    def createCursor(self, widget):
        return qt.QCursor(qt.Qt.CrossCursor)

    # -- engine and image --------------------------------------------------------------------------
    def segmenter(self):
        from qmedsam.catalogue import load_catalogue

        return SESSION.get(resolve_model_name(load_catalogue(), saved_model()), saved_threads())

    def sourceImage(self):
        """(volume (k, j, i), IntensityWindow), recomputed only when the data or display changes."""
        source = self.scriptedEffect.sourceVolumeImageData()
        volumeNode = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        display = volumeNode.GetDisplayNode() if volumeNode else None
        if display and not display.IsA("vtkMRMLScalarVolumeDisplayNode"):
            display = None  # a labelmap source volume's display node has no window/level
        window = (display.GetWindow(), display.GetLevel(), bool(display.GetAutoWindowLevel())) if display else None
        key = (source.GetMTime(), window)
        if self.imageCache is None or self.imageCache[0] != key:
            dims = source.GetDimensions()
            volume = numpy_support.vtk_to_numpy(source.GetPointData().GetScalars()).reshape(dims[::-1] + (-1,))
            volume = volume[..., 0] if volume.shape[-1] == 1 else volume.mean(axis=-1)  # colour: grey
            intensity = choose_window(volume, *(window if window else (None, None, True)))
            self.imageCache = (key, volume, intensity)
        return self.imageCache[1], self.imageCache[2]

    def rasToArrayIndex(self):
        """World RAS -> index of the source image array (through the segmentation's parent transform)."""
        source = self.scriptedEffect.sourceVolumeImageData()
        worldToImage = vtk.vtkMatrix4x4()
        source.GetWorldToImageMatrix(worldToImage)
        worldToSegmentation = vtk.vtkMatrix4x4()
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
            None, segmentationNode.GetParentTransformNode(), worldToSegmentation)
        extent = source.GetExtent()
        shift = np.eye(4)
        shift[:3, 3] = [-extent[0], -extent[2], -extent[4]]
        return shift @ slicer.util.arrayFromVTKMatrix(worldToImage) @ slicer.util.arrayFromVTKMatrix(
            worldToSegmentation)

    def currentGeometry(self):
        """The grid and source volume a mask computed now belongs to (None without a source volume)."""
        source = self.scriptedEffect.sourceVolumeImageData()
        if source is None:
            return None
        volumeNode = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        return effect_logic.VolumeGeometry(source.GetDimensions()[::-1], self.rasToArrayIndex(),
                                           volumeNode.GetID() if volumeNode else None)

    def viewGeometry(self, viewWidget):
        xyToRas = viewWidget.sliceLogic().GetSliceNode().GetXYToRAS()
        return xyToRas, self.rasToArrayIndex()

    # -- interaction -------------------------------------------------------------------------------
    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        if self.busy:  # a 3D run is processing events between slices: no new boxes meanwhile
            return eventId != vtk.vtkCommand.MouseMoveEvent
        xy = callerInteractor.GetEventPosition()
        modifier = callerInteractor.GetShiftKey() or callerInteractor.GetControlKey() or callerInteractor.GetAltKey()
        if eventId == vtk.vtkCommand.LeftButtonPressEvent and not modifier:
            if not openvino_available():
                self.onInstall()
                return True
            confirmed = self.scriptedEffect.confirmCurrentSegmentVisible()
            if confirmed in (self.scriptedEffect.NotConfirmed, self.scriptedEffect.ConfirmedWithDialog):
                return True
            self.dragStart = (viewWidget, xy)
            self.rubberBand(viewWidget).show(xy, xy)
            viewWidget.sliceView().scheduleRender()
            return True
        if eventId == vtk.vtkCommand.MouseMoveEvent:
            if self.dragStart and self.dragStart[0] == viewWidget:
                self.rubberBand(viewWidget).show(self.dragStart[1], xy)
                viewWidget.sliceView().scheduleRender()
                return True
            self.prefetchUnder(viewWidget, xy)
            return False
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and self.dragStart:
            startView, start = self.dragStart
            self.dragStart = None
            self.rubberBand(startView).hide()
            startView.sliceView().scheduleRender()
            if startView == viewWidget:
                self.onBoxDrawn(viewWidget, start, xy)
            return True
        if eventId == vtk.vtkCommand.KeyPressEvent:
            key = callerInteractor.GetKeySym()
            if key in ("Return", "a"):
                self.onApply()
                return True
            if key == "Escape" and self.session.state is effect_logic.State.PREVIEW:
                self.onCancelPreview()
                return True
            if key == "x":
                self.session.drop_last()
                self.showPreview()
                return True
        return False

    def processViewNodeEvents(self, callerViewNode, eventId, viewWidget):
        # Scrolling moves the slice without a mouse move: prefetch the new slice under the cursor.
        if callerViewNode and callerViewNode.IsA("vtkMRMLSliceNode") and not self.busy:
            position = viewWidget.sliceView().interactor().GetEventPosition()
            self.prefetchUnder(viewWidget, position)

    def rubberBand(self, viewWidget):
        if viewWidget not in self.rubberBands:
            self.rubberBands[viewWidget] = RubberBand()
            self.scriptedEffect.addActor2D(viewWidget, self.rubberBands[viewWidget].actor)
        return self.rubberBands[viewWidget]

    # -- prefetch ----------------------------------------------------------------------------------
    def prefetchUnder(self, viewWidget, xy):
        if not openvino_available() or self.scriptedEffect.sourceVolumeImageData() is None:
            return
        try:
            xyToRas, rasToIjk = self.viewGeometry(viewWidget)
            volume, intensity = self.sourceImage()
            frame = slice_frame(xyToRas, rasToIjk)
            index = slice_index_at(xy, xyToRas, rasToIjk, frame, volume.shape)
            if index is None or (frame, index) == self.prefetchedAt:
                return
            if SESSION.segmenter is None and SESSION.last_error:
                return  # the model failed to load: drawing a box retries and says why, not every mouse move
            segmenter = self.segmenter()
            if self.prefetcher is None or self.prefetcher.segmenter is not segmenter:  # model/threads changed
                from QMedSAMSlicerLib.background_encoder import BackgroundEncoder

                self.prefetcher = BackgroundEncoder(segmenter)
            image = effect_logic.engine_slices(volume, frame, index, index, intensity)[0]
            self.prefetcher.request(np.ascontiguousarray(image))
            self.prefetchedAt = (frame, index)
        except Exception as error:  # prefetch is an optimisation: never let it break interaction
            self.prefetchedAt = None
            self.statusLabel.text = f"Background encoding unavailable: {error}"

    def onPollPrefetch(self):
        if self.prefetcher is not None and not self.busy:
            self.prefetcher.poll()

    # -- segmenting --------------------------------------------------------------------------------
    def onBoxDrawn(self, viewWidget, start, end):
        """Segments the box dragged from `start` to `end` (XY pixels of the slice view `viewWidget`) and adds the
        result to the preview; Apply (onApply) writes it. The mouse release calls this; so can scripts and the
        self-test, with the XY of RAS points from box_geometry.ras_to_xy. Returns True when the preview holds
        this box's result; otherwise the status line says why not."""
        from qmedsam.engine import Cancelled
        from qmedsam.errors import QMedSAMError

        try:
            xyToRas, rasToIjk = self.viewGeometry(viewWidget)
            volume, intensity = self.sourceImage()
            geometry = self.currentGeometry()
            box = box_from_drag(start, end, xyToRas, rasToIjk, volume.shape)
        except BoxError as error:
            self.statusLabel.text = str(error)
            return False
        mode = self.scriptedEffect.parameter("Mode")
        halfExtent = self.scriptedEffect.integerParameter("HalfExtent") or self.autoHalfExtent(box, rasToIjk)
        call = effect_logic.plan_engine_call(mode, box, box.frame.engine_shape(volume.shape)[0], halfExtent)
        notes = []
        if box.frame.tilt_degrees > TILT_WARNING_DEGREES:
            notes.append(f"the view is {box.frame.tilt_degrees:.0f}\u00b0 from the volume's slices: the nearest "
                         "voxel slice was segmented")
        if call.extent is not None and not call.extent.starts_on_drawn_slice:
            notes.append("the range reaches the end of the volume, so propagation starts from its middle slice")
        added = False
        self.busy, self.cancelRequested = True, False
        self.progressWidget.visible = call.method == "segment_3d"
        self.progressBar.value = 0
        self.updateButtons()
        try:
            with slicer.util.WaitCursor():
                segmenter = self.segmenter()
                if self.prefetcher is not None and call.method == "segment_2d":
                    image = effect_logic.engine_slices(volume, box.frame, call.first, call.last, intensity)[0]
                    self.prefetcher.finish(np.ascontiguousarray(image))
                result = effect_logic.run_engine_call(segmenter, call, box.frame, volume, intensity,
                                                      progress=self.onProgress, cancel=lambda: self.cancelRequested,
                                                      geometry=geometry)
            if self.cancelRequested:  # Stop or deactivation in the events processed after the last slice
                raise Cancelled("Segmentation cancelled; nothing was changed.")
            if self.session.add(result):
                notes.append("the earlier boxes were made on another volume or grid and were dropped")
            self.showPreview()
            added = bool(self.session.pending)
            if added:  # else showPreview discarded it (volume changed during a 3D run) and said why
                self.statusLabel.text = "; ".join([f"Previewing {len(self.session.pending)} box(es)"] + notes) + "."
        except Cancelled:
            self.statusLabel.text = "Stopped; nothing was changed."
        except QMedSAMError as error:
            self.statusLabel.text = str(error)
        finally:
            self.busy = False
            self.progressWidget.visible = False
            message = self.statusLabel.text
            self.updateButtons()  # shows the engine status: put this run's message back
            self.statusLabel.text = message
        return added

    def autoHalfExtent(self, box, rasToIjk):
        from QMedSAMSlicerLib.box_geometry import voxel_spacing

        spacing = voxel_spacing(rasToIjk)
        frame = box.frame
        return auto_half_extent(box.width, box.height, (spacing[frame.column_axis], spacing[frame.row_axis]),
                                spacing[frame.normal_axis])

    def onProgress(self, done, total):
        self.progressBar.maximum = total
        self.progressBar.value = done
        slicer.app.processEvents()  # keeps the UI and the Stop button alive between slices

    def onStop(self):
        self.cancelRequested = True

    def onInstall(self):
        if ensure_openvino(parent=slicer.util.mainWindow()):
            self.pollTimer.start()
        self.updateButtons()

    # -- preview, apply, cancel --------------------------------------------------------------------
    def labelmapFromMask(self, mask_kji):
        """vtkOrientedImageData on the source image's grid holding the mask as 0/1."""
        source = self.scriptedEffect.sourceVolumeImageData()
        labelmap = slicer.vtkOrientedImageData()
        labelmap.SetExtent(source.GetExtent())
        imageToWorld = vtk.vtkMatrix4x4()
        source.GetImageToWorldMatrix(imageToWorld)
        labelmap.SetImageToWorldMatrix(imageToWorld)
        labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        scalars = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
        scalars[:] = np.ascontiguousarray(mask_kji, np.uint8).ravel()
        labelmap.Modified()
        return labelmap

    def showPreview(self):
        volume, _ = self.sourceImage()
        try:
            mask = self.session.preview_mask(volume.shape)
        except effect_logic.StalePreview as error:  # e.g. "x" after the volume changed
            self.discardPreview(str(error))
            return
        if mask is None:
            self.removePreview()
            self.updateButtons()
            return
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        if self.previewNode is not None and self.previewNode.GetScene() is None:
            self.previewNode = None  # removed with the scene it was in (scene closed)
        if self.previewNode is None:
            self.previewNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "QMedSAM preview")
            self.previewNode.SetHideFromEditors(True)
            self.previewNode.SetSaveWithScene(False)
            self.previewNode.CreateDefaultDisplayNodes()
            self.previewNode.GetDisplayNode().SetOpacity2DFill(0.4)
            self.previewNode.GetSegmentation().AddEmptySegment("preview", "preview", PREVIEW_COLOR)
        self.previewNode.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            self.labelmapFromMask(mask), self.previewNode, "preview",
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
        self.updateButtons()

    def removePreview(self):
        if self.previewNode is not None:
            if self.previewNode.GetScene() is not None:  # not if a scene close already removed it
                self.previewNode.GetScene().RemoveNode(self.previewNode)
            self.previewNode = None

    def discardPreview(self, message):
        self.onCancelPreview()
        self.statusLabel.text = message  # after onCancelPreview, whose updateButtons shows the engine status

    def sourceVolumeNodeChanged(self):
        # Slicer calls this on every registered effect: drop a preview of the previous volume at once, not at Apply.
        reason = self.session.stale_reason(self.currentGeometry()) if self.session.pending else None
        if reason is not None:
            self.discardPreview(reason)

    def onApply(self):
        parameters = self.scriptedEffect.parameterSetNode()
        segmentation = parameters.GetSegmentationNode().GetSegmentation()
        originalSegmentId = parameters.GetSelectedSegmentID()
        segmentExists = bool(originalSegmentId) and segmentation.GetSegment(originalSegmentId) is not None
        geometry = self.currentGeometry()
        try:
            plan = self.session.apply_plan(bool(self.scriptedEffect.integerParameter("EachBoxNewSegment")), geometry,
                                           segmentExists)
        except effect_logic.StalePreview as error:
            self.discardPreview(str(error))
            return
        except effect_logic.ApplyRefused as error:
            self.statusLabel.text = str(error)
            return
        newSegmentIds = {}
        for action in plan:
            if action.kind == effect_logic.SAVE_UNDO:
                self.scriptedEffect.saveStateForUndo()
            elif action.kind == effect_logic.ADD_SEGMENT:
                newSegmentIds[action.mask_index] = segmentation.AddEmptySegment("", f"QMedSAM {action.mask_index + 1}")
            elif action.kind == effect_logic.SELECT_SEGMENT:
                parameters.SetSelectedSegmentID(newSegmentIds[action.mask_index])
            elif action.kind == effect_logic.MODIFY_SELECTED:
                labelmap = self.labelmapFromMask(effect_logic.mask_for_apply(self.session, action, geometry.shape))
                self.scriptedEffect.modifySelectedSegmentByLabelmap(
                    labelmap, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd)
            elif action.kind == effect_logic.RESELECT_ORIGINAL:
                parameters.SetSelectedSegmentID(originalSegmentId)
            elif action.kind == effect_logic.CLEAR_PREVIEW:
                self.removePreview()
        self.session.finish()
        self.updateButtons()

    def onCancelPreview(self):
        for action in self.session.cancel_plan():
            if action.kind == effect_logic.CLEAR_PREVIEW:
                self.removePreview()
        self.session.finish()
        self.updateButtons()


class RubberBand:
    """A rectangle outline drawn in one slice view's display (XY) coordinates while dragging."""

    def __init__(self):
        self.points = vtk.vtkPoints()
        self.points.SetNumberOfPoints(4)
        lines = vtk.vtkCellArray()
        lines.InsertNextCell(5, [0, 1, 2, 3, 0])
        self.polyData = vtk.vtkPolyData()
        self.polyData.SetPoints(self.points)
        self.polyData.SetLines(lines)
        mapper = vtk.vtkPolyDataMapper2D()
        mapper.SetInputData(self.polyData)
        self.actor = vtk.vtkActor2D()
        self.actor.SetMapper(mapper)
        self.actor.GetProperty().SetColor(*PREVIEW_COLOR)
        self.actor.GetProperty().SetLineWidth(2)
        self.actor.VisibilityOff()

    def show(self, start, end):
        (x0, y0), (x1, y1) = start, end
        for index, (x, y) in enumerate(((x0, y0), (x1, y0), (x1, y1), (x0, y1))):
            self.points.SetPoint(index, x, y, 0)
        self.points.Modified()
        self.actor.VisibilityOn()

    def hide(self):
        self.actor.VisibilityOff()
