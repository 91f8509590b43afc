"""Slicer self-test of the QMedSAM effect, driven through a qMRMLSegmentEditorWidget.

A box is drawn by calling the effect's onBoxDrawn, as a mouse release in the Red view does, with the view XY of
two RAS corners (box_geometry.ras_to_xy inverts the slice node's XYToRAS); then the effect's onApply, then
the editor's undo (Ctrl+Z). The references are analytic ellipsoids (QMedSAMSlicerLib.self_test_scenes), so no
stored result is needed; Testing/test_slicer_self_test_scenes.py runs the same scenes through the engine
without Slicer.

1. Synthetic volume tilted 10 degrees, with a bright ellipsoid: this-slice and 3D modes reach Dice >= 0.9 on
   the slices they may write and write nothing elsewhere; undo restores the empty segment; with "each box to a
   new segment", undo removes the new segment.
2. SampleData MRHead with an ellipsoid written at its middle voxel (the sample's own geometry, orientation and
   intensity windowing): this slice, Dice >= 0.9, undo.
Never skips: with OpenVINO the real engine runs; without it (a fresh Slicer) every MRML step still runs, with
a clearly named geometric stand-in segmenter (self_test_scenes.BoxThresholdStandIn) in place of the model. The
test prints which one ran.
"""

import numpy as np
import slicer
import vtk
from QMedSAMSlicerLib import self_test_scenes as scenes
from QMedSAMSlicerLib.box_geometry import ras_to_xy
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class QMedSAMSlicerSelfTestTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear(0)
        from QMedSAMSlicerLib.engine_session import openvino_available

        self.standIn = None if openvino_available() else scenes.BoxThresholdStandIn()
        which = self.standIn.name if self.standIn else "the QMedSAM engine (OpenVINO)"
        print(f"QMedSAM self-test segments with {which}")  # the test log says which ran
        self.delayDisplay(f"Segmenting with {which}")

    def runTest(self):
        self.setUp()
        self.test_box_on_synthetic_oblique_ellipsoid()
        self.setUp()
        self.test_box_on_ellipsoid_in_sample_data_mrhead()

    # -- helpers -----------------------------------------------------------------------------------
    def makeEditor(self, volumeNode):
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("target")
        # One-up Red: the Red view exists, and is large, whatever layout the user left.
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMaximumNumberOfUndoStates(10)
        editor.setMRMLScene(slicer.mrmlScene)
        editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        editor.setMRMLSegmentEditorNode(editorNode)
        editor.setSegmentationNode(segmentationNode)
        editor.setSourceVolumeNode(volumeNode)  # Slicer >= 5.2; setMasterVolumeNode is its deprecated alias
        editor.setCurrentSegmentID(segmentId)
        editor.show()
        editor.setActiveEffectByName("QMedSAM")
        effect = editor.activeEffect()
        self.assertIsNotNone(effect, "the QMedSAM effect is not registered (the module registers it at startup)")
        effect.self().segmenterOverride = self.standIn
        return editor, effect, segmentationNode, segmentId

    def closeEditor(self, editor):
        editor.setActiveEffectByName("")  # deactivates the effect: stops its timer and prefetch
        editor.close()

    def drawBoxAndApply(self, effect, scene):
        """Box from the scene's two RAS corners in the axial Red view through its centre, then Apply."""
        redWidget = slicer.app.layoutManager().sliceWidget("Red")
        sliceNode = redWidget.mrmlSliceNode()
        sliceNode.SetOrientationToAxial()  # the corners are around the structure's axial cross-section
        sliceNode.JumpSliceByCentering(*scene.centre_ras)
        slicer.app.processEvents()
        # Whole pixels, as a mouse event reports them.
        start, end = (np.rint(xyz[:2]).astype(int).tolist() for xyz in ras_to_xy(scene.corners_ras,
                                                                                    sliceNode.GetXYToRAS()))
        self.assertTrue(effect.self().onBoxDrawn(redWidget, start, end), effect.self().message)
        effect.self().onApply()
        self.assertTrue(effect.self().message.startswith("Applied"), effect.self().message)

    def segmentMask(self, segmentationNode, segmentId, volumeNode):
        # With a reference volume the array always has the volume's full shape, also for an empty segment.
        return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode) > 0

    def assertDice(self, mask, truth, plane):
        score = scenes.plane_dice(mask, truth, plane)
        self.assertGreaterEqual(score, scenes.MIN_DICE, f"Dice {score:.3f} on voxel slice {plane}")

    # -- tests -------------------------------------------------------------------------------------
    def test_box_on_synthetic_oblique_ellipsoid(self):
        self.delayDisplay("Synthetic volume tilted 10 degrees, with an ellipsoid")
        scene = scenes.oblique_ellipsoid()
        volumeNode = slicer.util.addVolumeFromArray(scene.voxels, scene.ijk_to_ras, name="QMedSAM ellipsoid")
        editor, effect, segmentationNode, segmentId = self.makeEditor(volumeNode)
        try:
            self.delayDisplay("This slice: box, preview, Apply")
            effect.setParameter("Mode", "slice")
            self.drawBoxAndApply(effect, scene)
            mask = self.segmentMask(segmentationNode, segmentId, volumeNode)
            self.assertEqual(scenes.single_slice_plane(mask), scene.axial_plane, "not (only) the drawn K slice")
            self.assertDice(mask, scene.truth, scene.axial_plane)

            self.delayDisplay("Undo restores the empty segment")
            editor.undo()
            self.assertEqual(self.segmentMask(segmentationNode, segmentId, volumeNode).sum(), 0)

            self.delayDisplay("3D: +-6 slices")
            effect.setParameter("Mode", "3d")
            effect.setParameter("HalfExtent", 6)
            self.drawBoxAndApply(effect, scene)
            mask = self.segmentMask(segmentationNode, segmentId, volumeNode)
            k = scene.axial_plane[1]
            inRange = slice(k - 6, k + 7)
            self.assertEqual(mask[inRange].sum(), mask.sum(), "3D mode wrote outside +-6 slices")
            self.assertGreaterEqual(scenes.dice(mask[inRange], scene.truth[inRange]), scenes.MIN_DICE)
            editor.undo()
            self.assertEqual(self.segmentMask(segmentationNode, segmentId, volumeNode).sum(), 0)

            self.delayDisplay("Each box to a new segment: one undo removes the new segment")
            effect.setParameter("Mode", "slice")
            effect.setParameter("EachBoxNewSegment", 1)
            segmentation = segmentationNode.GetSegmentation()
            before = set(segmentation.GetSegmentIDs())
            self.drawBoxAndApply(effect, scene)
            added = set(segmentation.GetSegmentIDs()) - before
            self.assertEqual(len(added), 1)
            self.assertDice(self.segmentMask(segmentationNode, added.pop(), volumeNode), scene.truth,
                            scene.axial_plane)
            self.assertEqual(self.segmentMask(segmentationNode, segmentId, volumeNode).sum(), 0)
            editor.undo()
            self.assertEqual(set(segmentation.GetSegmentIDs()), before)
        finally:
            self.closeEditor(editor)
        self.delayDisplay("Synthetic ellipsoid test passed")

    def test_box_on_ellipsoid_in_sample_data_mrhead(self):
        import SampleData

        self.delayDisplay("SampleData MRHead with an ellipsoid at its middle voxel")
        volumeNode = SampleData.downloadSample("MRHead")
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        scene = scenes.implant_ellipsoid(slicer.util.arrayFromVolume(volumeNode), ijkToRas)
        slicer.util.arrayFromVolumeModified(volumeNode)
        editor, effect, segmentationNode, segmentId = self.makeEditor(volumeNode)
        try:
            effect.setParameter("Mode", "slice")
            self.drawBoxAndApply(effect, scene)
            mask = self.segmentMask(segmentationNode, segmentId, volumeNode)
            self.assertEqual(scenes.single_slice_plane(mask), scene.axial_plane, "not (only) the drawn slice")
            self.assertDice(mask, scene.truth, scene.axial_plane)
            editor.undo()
            self.assertEqual(self.segmentMask(segmentationNode, segmentId, volumeNode).sum(), 0)
        finally:
            self.closeEditor(editor)
        self.delayDisplay("MRHead test passed")
