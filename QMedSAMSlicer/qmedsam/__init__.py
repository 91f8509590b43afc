"""qmedsam: LiteMedSAM box-prompt segmentation with OpenVINO on a CPU (numpy + openvino only)."""

import sys

from .errors import QMedSAMError

# `import openvino` imports its model converter, which at once sends a usage event to Google Analytics
# through the optional openvino-telemetry package unless the user has opted out (consent is assumed when no
# choice was recorded). We send nothing without consent: with that package hidden, openvino falls back to
# its built-in no-op stub. It takes effect because qmedsam is imported before openvino (engine, CLI, Slicer
# effect; training/__init__.py imports qmedsam first); Testing/test_no_network.py checks it.
sys.modules.setdefault("openvino_telemetry", None)

__all__ = ["QMedSAMError"]
__version__ = "0.1.0"
