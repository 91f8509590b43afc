"""How to install the engine's one missing dependency (openvino) into Slicer's Python without breaking it.

Slicer bundles numpy, and other modules are built against it: the installed numpy version is passed as a
pip constraint, so pip picks an openvino that works with it instead of replacing it. The openvino range
follows Slicer's Python: 5.6/5.8 run Python 3.9, whose newest openvino is the 2025.3 series; 5.10+ run
Python 3.12. Slicer 5.12 adds `slicer.packaging`; where it exists, its constraint-aware installer is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Lower bound: the oldest openvino the shipped IRs were checked with; upper bound: the newest major series
# tested, so that a future openvino API change cannot break installed extensions.
OPENVINO_FOR_PYTHON = {
    (3, 9): "openvino>=2024.4,<2025.4",  # Slicer 5.6/5.8; openvino 2025.4 dropped Python 3.9
    (3, 10): "openvino>=2024.4,<2027",
    (3, 11): "openvino>=2024.4,<2027",
    (3, 12): "openvino>=2024.4,<2027",  # Slicer 5.10, 5.12
}
OLDEST_PYTHON, NEWEST_PYTHON = min(OPENVINO_FOR_PYTHON), max(OPENVINO_FOR_PYTHON)


class UnsupportedPython(ValueError):
    pass


@dataclass(frozen=True)
class InstallPlan:
    requirement: str  # what to install
    constraints: tuple  # lines of a pip constraints file (packages that must not change)
    use_packaging_module: bool  # Slicer 5.12+: slicer.packaging instead of slicer.util.pip_install

    def pip_arguments(self, constraints_file: str) -> list:
        """Argument list for slicer.util.pip_install before 5.12 (each item is quoted for pip);
        from 5.12 the effect calls slicer.packaging.pip_install(requirement, constraints=constraints_file)."""
        arguments = [self.requirement]
        if self.constraints:
            arguments += ["-c", constraints_file]
        return arguments

    def constraints_text(self) -> str:
        return "".join(line + "\n" for line in self.constraints)

    def describe(self) -> str:
        kept = ", ".join(self.constraints) or "nothing"
        return f"pip install {self.requirement} (keeping {kept})"


def _release(version: str) -> str:
    """'2.0.2' from '2.0.2', '1.26.4+mkl' -> '1.26.4' (local and dev tags cannot be pinned by pip)."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    if not match:
        raise ValueError(f"cannot read a version number from {version!r}")
    return match.group(0)


def make_plan(python_version: tuple, numpy_version: str | None, has_packaging_module: bool) -> InstallPlan:
    key = tuple(python_version[:2])
    if key not in OPENVINO_FOR_PYTHON:
        raise UnsupportedPython(
            f"This Slicer runs Python {key[0]}.{key[1]}; QMedSAM needs Python "
            f"{OLDEST_PYTHON[0]}.{OLDEST_PYTHON[1]}-{NEWEST_PYTHON[0]}.{NEWEST_PYTHON[1]} "
            "(Slicer 5.6 or newer).")
    constraints = (f"numpy=={_release(numpy_version)}",) if numpy_version else ()
    return InstallPlan(OPENVINO_FOR_PYTHON[key], constraints, has_packaging_module)


def confirmation_text(plan: InstallPlan) -> str:
    return ("QMedSAM runs the segmentation model with OpenVINO, which is not installed in Slicer's Python yet.\n\n"
            f"Install it now? ({plan.describe()}; about 50 MB from PyPI, once.)\n\n"
            "Nothing else in Slicer is changed, and no image leaves this computer.")


def failure_text(plan: InstallPlan, error: str) -> str:
    """What failed and how to fix it; Slicer itself keeps working either way."""
    last_line = (error or "unknown error").strip().splitlines()[-1:] or ["unknown error"]
    hints = []
    lowered = (error or "").lower()
    if "resolutionimpossible" in lowered or "conflict" in lowered:
        hints.append("pip found no openvino that works with Slicer's numpy; update Slicer to 5.10 or newer")
    if "connection" in lowered or "network" in lowered or "proxy" in lowered or "ssl" in lowered:
        hints.append("check the internet connection or proxy settings (PyPI must be reachable)")
    if "permission" in lowered or "access is denied" in lowered:
        hints.append("Slicer's folder is read-only: run Slicer as the user who installed it")
    hints.append(f"or install by hand in the Python console: slicer.util.pip_install('{plan.requirement}')")
    return (f"Installing OpenVINO failed: {last_line[0]}\n\nTo fix it: " + "; ".join(hints) + ".\n\n"
            "Slicer itself was not changed and keeps working; the QMedSAM effect stays disabled until OpenVINO "
            "is installed.")
