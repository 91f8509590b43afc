"""Slicer glue: install openvino after asking the user, on the main thread, with Slicer's numpy pinned.

The decisions (version range, constraints, messages) are in install_plan.py.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

import qt
import slicer

from .engine_session import openvino_available
from .install_plan import UnsupportedPython, confirmation_text, failure_text, make_plan


def _installed_numpy() -> str | None:
    try:
        import numpy

        return numpy.__version__
    except ImportError:
        return None


def _packaging_module():
    """slicer.packaging (Slicer 5.12+), or None on older Slicer."""
    try:
        module = importlib.import_module("slicer.packaging")
    except ImportError:
        return None
    return module if hasattr(module, "pip_install") else None


def ensure_openvino(parent=None) -> bool:
    """True when openvino is importable, installing it first if the user agrees."""
    if openvino_available():
        return True
    if qt.QThread.currentThread() != slicer.app.thread():
        raise RuntimeError("ensure_openvino must run on Slicer's main thread")  # pip_install creates Qt objects
    try:
        plan = make_plan(sys.version_info, _installed_numpy(), _packaging_module() is not None)
    except UnsupportedPython as error:
        slicer.util.errorDisplay(str(error), parent=parent)
        return False
    if not slicer.util.confirmOkCancelDisplay(confirmation_text(plan), windowTitle="QMedSAM", parent=parent):
        return False
    handle, constraints_file = tempfile.mkstemp(prefix="qmedsam-constraints-", suffix=".txt")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(plan.constraints_text())
        with slicer.util.WaitCursor():
            if plan.use_packaging_module:
                _packaging_module().pip_install(plan.requirement, constraints=constraints_file, requester="QMedSAM")
            else:
                slicer.util.pip_install(plan.pip_arguments(constraints_file))
    except Exception as error:  # pip's CalledProcessError, network errors: report, keep Slicer running
        slicer.util.errorDisplay(failure_text(plan, str(error)), parent=parent)
        return False
    finally:
        os.remove(constraints_file)
    importlib.invalidate_caches()
    if not openvino_available():
        slicer.util.errorDisplay(failure_text(plan, "pip finished but openvino cannot be imported"), parent=parent)
        return False
    return True
