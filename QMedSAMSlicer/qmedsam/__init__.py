"""qmedsam: LiteMedSAM box-prompt segmentation with OpenVINO on a CPU (numpy + openvino only)."""

from .errors import QMedSAMError

__all__ = ["QMedSAMError"]
__version__ = "0.1.0"
