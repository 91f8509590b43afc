"""One Segmenter shared by the module panel and the effect, created on first use and rebuilt only when the
model or thread count changes (compiling takes ~1 s; the embedding cache lives in the Segmenter).

Slicer-free. openvino is imported only when the engine is created, so Slicer starts, and the panel can
offer to install it, when it is missing.
"""

from __future__ import annotations

import importlib.util


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


class EngineSession:
    def __init__(self):
        self.segmenter = None
        self._key = None
        self.last_error = ""

    def get(self, model_name: str | None, threads: int | None):
        """The Segmenter for these settings (threads 0 or None: OpenVINO's choice)."""
        key = (model_name, threads or None)
        if self.segmenter is None or key != self._key:
            from qmedsam.engine import Segmenter  # needs openvino

            self.segmenter = None
            try:
                self.segmenter = Segmenter(model_name, threads=threads or None)
            except Exception as error:  # shown in the panel; QMedSAMError carries the user-facing text
                self.last_error = str(error)
                raise
            self._key = key
            self.last_error = ""
        return self.segmenter

    def status(self) -> str:
        if not openvino_available():
            return "OpenVINO is not installed: press 'Install OpenVINO' (once, about 50 MB)."
        if self.last_error:
            return f"Engine error: {self.last_error}"
        if self.segmenter is None:
            return "Ready: the model is loaded when the effect is first used."
        stats = self.segmenter.stats
        _, threads = self._key
        return (f"Model {self.segmenter.entry.name} loaded ({threads or 'auto'} threads); "
                f"{stats.encoder_runs} slices encoded, {stats.cache_hits} from cache, "
                f"{stats.boxes_decoded} boxes decoded.")
