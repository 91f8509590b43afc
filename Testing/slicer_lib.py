"""Makes the Slicer module's Lib package importable in pytest (Slicer puts the module folder on sys.path)."""

import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1] / "QMedSAMSlicer"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))
