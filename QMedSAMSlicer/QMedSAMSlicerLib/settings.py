"""Slicer glue: the user's model and thread choices (QSettings) and the engine shared by panel and effect."""

import qt

from QMedSAMSlicerLib.engine_session import EngineSession

SESSION = EngineSession()
MODEL_KEY = "QMedSAM/Model"
THREADS_KEY = "QMedSAM/Threads"


def saved_model():
    return qt.QSettings().value(MODEL_KEY, "") or None


def saved_threads():
    """0 = let OpenVINO choose (all physical cores)."""
    try:
        return int(qt.QSettings().value(THREADS_KEY, 0))
    except (TypeError, ValueError):
        return 0


def save(model_name, threads):
    settings = qt.QSettings()
    settings.setValue(MODEL_KEY, model_name or "")
    settings.setValue(THREADS_KEY, int(threads))
