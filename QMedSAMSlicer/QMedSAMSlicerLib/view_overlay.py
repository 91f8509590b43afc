"""What the effect draws in a slice view while the user drags (VTK only, no Qt)."""

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
    """The box being dragged: one rubber band per slice view, added to the view through the effect's
    `add_actor(view, actor)` / `remove_actor(view, actor)` (scriptedEffect.addActor2D / removeActor2D)."""

    def __init__(self, add_actor, remove_actor):
        self.add_actor, self.remove_actor = add_actor, remove_actor
        self.bands = {}
        self.start = None  # (view widget, xy)

    def _band(self, view):
        if view not in self.bands:
            self.bands[view] = RubberBand()
            self.add_actor(view, self.bands[view].actor)
        return self.bands[view]

    def press(self, view, xy):
        self.start = (view, xy)
        self._band(view).show(xy, xy)
        view.sliceView().scheduleRender()

    def move(self, view, xy) -> bool:
        """Follows the mouse; False when no drag is going on in this view."""
        if self.start is None or self.start[0] != view:
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
        self._band(start_view).hide()
        start_view.sliceView().scheduleRender()
        return (start, xy) if start_view == view else None

    def clear(self):
        for view, band in self.bands.items():
            self.remove_actor(view, band.actor)
        self.bands, self.start = {}, None
