"""What the effect draws in the slice views: the rubber band while dragging (a VTK actor in view pixels) and
the clicks (markups point lists in world coordinates). No Qt."""

import vtk

from .mrml_labelmap import PREVIEW_COLOR


class RubberBand:
    """A rectangle outline drawn in one slice view's display (XY) coordinates while dragging."""

    def __init__(self):
        self.points = vtk.vtkPoints()
        self.points.SetNumberOfPoints(4)
        lines = vtk.vtkCellArray()
        lines.InsertNextCell(5, [0, 1, 2, 3, 0])
        polyData = vtk.vtkPolyData()
        polyData.SetPoints(self.points)
        polyData.SetLines(lines)
        mapper = vtk.vtkPolyDataMapper2D()
        mapper.SetInputData(polyData)
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


class DragTracker:
    """The left press being followed until its release (a box drag, or a click when it ends in place:
    click_prompts.is_click): one rubber band per slice view, added to the view through the effect's
    `add_actor(view, actor)` / `remove_actor(view, actor)` (scriptedEffect.addActor2D / removeActor2D)."""

    def __init__(self, add_actor, remove_actor):
        self.add_actor, self.remove_actor = add_actor, remove_actor
        self.bands = {}
        self.start = None  # (view widget, xy)
        self.banded = True  # False: a press the view handles (Shift+drag pans); only its release is watched

    def _band(self, view):
        if view not in self.bands:
            self.bands[view] = RubberBand()
            self.add_actor(view, self.bands[view].actor)
        return self.bands[view]

    def press(self, view, xy, band: bool = True):
        self.start, self.banded = (view, xy), band
        if band:
            self._band(view).show(xy, xy)
            view.sliceView().scheduleRender()

    def move(self, view, xy) -> bool:
        """Follows the mouse; False when no drag is going on in this view."""
        if self.start is None or self.start[0] != view or not self.banded:
            return False
        self._band(view).show(self.start[1], xy)
        view.sliceView().scheduleRender()
        return True

    def release(self, view, xy):
        """(start, end) of a drag that ended in the view it began in, else None."""
        if self.start is None:
            return None
        start_view, start = self.start
        self.start = None
        if self.banded:
            self._band(start_view).hide()
            start_view.sliceView().scheduleRender()
        return (start, xy) if start_view == view else None

    def clear(self):
        for view, band in self.bands.items():
            self.remove_actor(view, band.actor)
        self.bands, self.start = {}, None


POSITIVE_CLICK_COLOR = (0.2, 0.85, 0.2)
NEGATIVE_CLICK_COLOR = (0.95, 0.15, 0.15)
CLICK_GLYPH_SCALE = 2.0  # percent of the view's size: a small dot (Slicer's default for point lists is 3)


class ClickMarkers:
    """The clicks as two markups point lists, green for positive and red for negative.

    Real MRML nodes rather than an actor in view pixels: Slicer draws them at their world position in every
    slice view, follows pan, zoom and scrolling (a point shows on its own slice only) and removes them with
    a closed scene. Hidden from the Data module, never saved, locked (clicking one does nothing), no labels,
    slice views only (clicks are 2D prompts)."""

    def __init__(self):
        self.nodes = {}  # positive (bool) -> vtkMRMLMarkupsFiducialNode

    def show(self, scene, clicks) -> None:
        """Shows exactly `clicks` (anything with .ras and .positive) in `scene`; none: the nodes are removed."""
        if scene is None:  # the scene was closed, and the nodes with it
            return self.remove()
        for positive, color in ((True, POSITIVE_CLICK_COLOR), (False, NEGATIVE_CLICK_COLOR)):
            points = [click.ras for click in clicks if click.positive == positive]
            node = self.nodes.get(positive)
            if node is not None and (node.GetScene() is not scene or not points):
                self._remove(positive)
                node = None
            if not points:
                continue
            if node is None:
                node = self.nodes[positive] = self._new_node(scene, positive, color)
            node.RemoveAllControlPoints()
            for ras in points:
                node.AddControlPointWorld(vtk.vtkVector3d(*ras))

    @staticmethod
    def _new_node(scene, positive: bool, color) -> object:
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"QMedSAM {'positive' if positive else 'negative'}"
                                       " clicks")
        node.SetHideFromEditors(True)
        node.SetSaveWithScene(False)
        node.SetLocked(True)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetColor(*color)
        display.SetSelectedColor(*color)  # points are "selected" by default: this is the colour shown
        display.SetGlyphScale(CLICK_GLYPH_SCALE)
        display.SetPointLabelsVisibility(False)
        display.SetPropertiesLabelVisibility(False)
        display.SetVisibility3D(False)
        return node

    def _remove(self, positive: bool) -> None:
        node = self.nodes.pop(positive)
        if node.GetScene() is not None:
            node.GetScene().RemoveNode(node)

    def remove(self) -> None:
        for positive in list(self.nodes):
            self._remove(positive)
