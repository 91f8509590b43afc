"""Slicer self-test of the QMedSAM effect, run through a qMRMLSegmentEditorWidget.

1. A synthetic, obliquely oriented volume holding a bright ellipsoid (an analytic reference, so no stored
   result is needed): a box dragged around it in the Red view, this-slice and 3D modes, Dice >= 0.9
   against the ellipsoid, and one Ctrl+Z restores the empty segment.
2. SampleData MRHead: a box around the left eye globe gives a non-empty mask inside the box.
Needs OpenVINO in Slicer's Python (the test skips itself, with a message, when it is missing).
"""

import unittest

import numpy as np
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

CENTRE_IJK = np.array([70.0, 60.0, 20.0])  # i, j, k
RADII_IJK = np.array([30.0, 22.0, 10.0])
SPACING = (0.9, 0.9, 2.0)


def ellipsoid_kji(shape_kji):
    k, j, i = np.mgrid[: shape_kji[0], : shape_kji[1], : shape_kji[2]]
    return (((i - CENTRE_IJK[0]) / RADII_IJK[0]) ** 2 + ((j - CENTRE_IJK[1]) / RADII_IJK[1]) ** 2
            + ((k - CENTRE_IJK[2]) / RADII_IJK[2]) ** 2) <= 1.0


def dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


class QMedSAMSlicerSelfTestTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear(0)
        from QMedSAMSlicerLib.engine_session import openvino_available

        if not openvino_available():
            raise unittest.SkipTest("OpenVINO is not installed in Slicer's Python; use the QMedSAM module's "
                                    "'Install OpenVINO' button first.")

    def runTest(self):
        self.setUp()
        self.test_box_on_synthetic_ellipsoid_dice_and_undo()
        self.setUp()
        self.test_sample_data_mrhead()

    # -- helpers -----------------------------------------------------------------------------------
    def makeEditor(self, volumeNode):
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("target")
        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMaximumNumberOfUndoStates(10)
        editor.setMRMLScene(slicer.mrmlScene)
        editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        editor.setMRMLSegmentEditorNode(editorNode)
        editor.setSegmentationNode(segmentationNode)
        editor.setSourceVolumeNode(volumeNode)
        editor.setCurrentSegmentID(segmentId)
        editor.show()
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
        editor.setActiveEffectByName("QMedSAM")
        effect = editor.activeEffect()
        self.assertIsNotNone(effect, "the QMedSAM effect is not registered")
        return editor, effect, segmentationNode, segmentId

    def dragBox(self, effect, rasLow, rasHigh, centreRas):
        """Put the Red view through centreRas and drag from rasLow to rasHigh (their view projections)."""
        redWidget = slicer.app.layoutManager().sliceWidget("Red")
        redWidget.sliceLogic().GetSliceNode().JumpSliceByCentering(*centreRas)
        slicer.app.processEvents()
        start = effect.self().rasToXy(rasLow, redWidget)
        end = effect.self().rasToXy(rasHigh, redWidget)
        effect.self().onBoxDrawn(redWidget, [int(round(v)) for v in start], [int(round(v)) for v in end])

    def segmentMask(self, segmentationNode, segmentId, volumeNode):
        return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode) > 0

    # -- tests -------------------------------------------------------------------------------------
    def test_box_on_synthetic_ellipsoid_dice_and_undo(self):
        self.delayDisplay("Synthetic oblique volume with an ellipsoid")
        shape = (40, 128, 128)
        truth = ellipsoid_kji(shape)
        rng = np.random.default_rng(0)
        voxels = (100 + 20 * rng.standard_normal(shape) + 300 * truth).astype(np.int16)
        volumeNode = slicer.util.addVolumeFromArray(voxels, name="QMedSAM ellipsoid")
        volumeNode.SetSpacing(*SPACING)
        directions = vtk.vtkMatrix4x4()
        rotation = vtk.vtkTransform()
        rotation.RotateX(10.0)  # oblique: the view must still pick the K slices
        directions.DeepCopy(rotation.GetMatrix())
        volumeNode.SetIJKToRASDirectionMatrix(directions)
        editor, effect, segmentationNode, segmentId = self.makeEditor(volumeNode)

        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)

        def ras(ijk):
            return list(ijkToRas.MultiplyPoint([*ijk, 1.0])[:3])

        margin = np.array([3.0, 3.0, 0.0])
        low, high = CENTRE_IJK - RADII_IJK * [1, 1, 0] - margin, CENTRE_IJK + RADII_IJK * [1, 1, 0] + margin

        self.delayDisplay("This slice: box, preview, Apply")
        effect.setParameter("Mode", "slice")
        self.dragBox(effect, ras(low), ras(high), ras(CENTRE_IJK))
        effect.self().onApply()
        mask = self.segmentMask(segmentationNode, segmentId, volumeNode)
        k = int(CENTRE_IJK[2])
        self.assertGreaterEqual(dice(mask[k], truth[k]), 0.9)
        self.assertEqual(mask.sum(), mask[k].sum(), "this-slice mode wrote outside the drawn slice")

        self.delayDisplay("Undo restores the empty segment")
        editor.undo()
        self.assertEqual(self.segmentMask(segmentationNode, segmentId, volumeNode).sum(), 0)

        self.delayDisplay("3D: +-6 slices")
        effect.setParameter("Mode", "3d")
        effect.setParameter("HalfExtent", 6)
        self.dragBox(effect, ras(low), ras(high), ras(CENTRE_IJK))
        effect.self().onApply()
        mask = self.segmentMask(segmentationNode, segmentId, volumeNode)
        inRange = slice(k - 6, k + 7)
        self.assertGreaterEqual(dice(mask[inRange], truth[inRange]), 0.9)
        editor.undo()
        self.assertEqual(self.segmentMask(segmentationNode, segmentId, volumeNode).sum(), 0)

        self.delayDisplay("Each box to a new segment: one undo removes the new segment")
        effect.setParameter("Mode", "slice")
        effect.setParameter("EachBoxNewSegment", 1)
        segmentCount = segmentationNode.GetSegmentation().GetNumberOfSegments()
        self.dragBox(effect, ras(low), ras(high), ras(CENTRE_IJK))
        effect.self().onApply()
        self.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), segmentCount + 1)
        editor.undo()
        self.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), segmentCount)
        editor.setActiveEffectByName("")
        self.delayDisplay("Synthetic ellipsoid test passed")

    def test_sample_data_mrhead(self):
        import SampleData

        self.delayDisplay("SampleData MRHead: box around the left eye globe")
        volumeNode = SampleData.downloadSample("MRHead")
        editor, effect, segmentationNode, segmentId = self.makeEditor(volumeNode)
        effect.setParameter("Mode", "slice")
        centre = [-32.0, 60.0, -12.0]  # left globe in MRHead's RAS (approximate)
        self.dragBox(effect, [centre[0] + 16, centre[1] - 16, centre[2]], [centre[0] - 16, centre[1] + 16, centre[2]],
                     centre)
        effect.self().onApply()
        mask = self.segmentMask(segmentationNode, segmentId, volumeNode)
        self.assertGreater(mask.sum(), 50, "no mask around the eye")
        editor.undo()
        self.assertEqual(self.segmentMask(segmentationNode, segmentId, volumeNode).sum(), 0)
        editor.setActiveEffectByName("")
        self.delayDisplay("MRHead test passed")
