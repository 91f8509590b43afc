"""One Segmenter shared by the module panel and the effect, created on first use and rebuilt only when the
model or thread count changes (compiling takes ~1 s; the embedding cache lives in the Segmenter).

`start_loading` compiles in a background thread (OpenVINO releases the GIL while compiling), so that the
first hover over a slice does not freeze Slicer; `get` waits for that thread when it is still running.
Inside Slicer, OpenVINO's compiled-model cache goes under Slicer's cache folder (Application settings),
not the engine's per-user default.

Slicer-free. openvino is imported only when the engine is created, so Slicer starts, and the panel can
offer to install it, when it is missing.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def openvino_cache_dir(app) -> Path:
    """Where the compiled-model cache goes for a Slicer application object (`slicer.app`)."""
    return Path(app.cachePath) / "QMedSAM"


def slicer_cache_dir() -> Path | None:
    """openvino_cache_dir(slicer.app) inside Slicer; None elsewhere (slicer-core has no application)."""
    app = getattr(sys.modules.get("slicer"), "app", None)  # inside Slicer, slicer is always imported already
    return openvino_cache_dir(app) if app is not None else None


class EngineSession:
    def __init__(self, compile_cache_dir: Path | None = None):
        self.segmenter = None
        self._key = None
        self.last_error = ""
        self.compile_cache_dir = compile_cache_dir
        self._loading = None  # (key, thread, {"segmenter"| "error": ...}) while a background load runs
        self._prefetcher = None  # the BackgroundEncoder of the loaded Segmenter

    def _build(self, key):
        from qmedsam.engine import Segmenter  # needs openvino

        model_name, threads = key
        cache_dir = self.compile_cache_dir if self.compile_cache_dir is not None else slicer_cache_dir()
        return Segmenter(model_name, threads=threads, compile_cache_dir=cache_dir)

    def start_loading(self, model_name: str | None, threads: int | None) -> bool:
        """Compile the model for these settings in a background thread; False when it is loaded or loading."""
        key = (model_name, threads or None)
        if (self.segmenter is not None and key == self._key) or (self._loading and self._loading[0] == key):
            return False
        outcome = {}

        def load():
            try:
                outcome["segmenter"] = self._build(key)
            except Exception as error:  # reported by get(), on the main thread
                outcome["error"] = error

        thread = threading.Thread(target=load, name="QMedSAM model compile", daemon=True)
        self._loading = (key, thread, outcome)
        thread.start()
        return True

    @property
    def loading(self) -> bool:
        return self._loading is not None and self._loading[1].is_alive()

    def ready(self, model_name: str | None, threads: int | None):
        """The Segmenter for these settings if it is loaded, else None (never waits)."""
        if self._loading is not None and not self._loading[1].is_alive():
            self._adopt_loaded()
        key = (model_name, threads or None)
        return self.segmenter if self.segmenter is not None and key == self._key else None

    def prefetcher(self, model_name: str | None, threads: int | None):
        """The background encoder of the loaded model for these settings, new when the model or threads
        changed; None while the model is not loaded yet (its background load is started, never waited for)."""
        segmenter = self.ready(model_name, threads)
        if segmenter is None:
            self.start_loading(model_name, threads)
            return None
        if self._prefetcher is None or self._prefetcher.segmenter is not segmenter:
            from .background_encoder import BackgroundEncoder  # needs openvino

            if self._prefetcher is not None:
                self._prefetcher.cancel()  # an encode for the previous model would only compete for the cores
            self._prefetcher = BackgroundEncoder(segmenter)
        return self._prefetcher

    def _adopt_loaded(self):
        key, thread, outcome = self._loading
        thread.join()
        self._loading = None
        if "error" in outcome:
            self.last_error = str(outcome["error"])
            return None
        self.segmenter, self._key, self.last_error = outcome["segmenter"], key, ""
        return self.segmenter

    def get(self, model_name: str | None, threads: int | None):
        """The Segmenter for these settings (threads 0 or None: OpenVINO's choice)."""
        key = (model_name, threads or None)
        if self._loading is not None and self._loading[0] == key:
            self._adopt_loaded()
            if self.segmenter is None or self._key != key:
                self._build_now(key)  # the background load failed: retry here so the error is raised
        if self.segmenter is None or key != self._key:
            self._build_now(key)
        return self.segmenter

    def _build_now(self, key):
        self._loading = None  # a background load for other settings is outdated: its result is dropped
        self.segmenter = None
        try:
            self.segmenter = self._build(key)
        except Exception as error:  # shown in the panel; QMedSAMError carries the user-facing text
            self.last_error = str(error)
            raise
        self._key = key
        self.last_error = ""

    def status(self) -> str:
        if not openvino_available():
            return "OpenVINO is not installed: press 'Install OpenVINO' (once, about 50 MB)."
        if self.loading:
            return "Loading the model in the background (first use, about a second)..."
        if self.last_error:
            return f"Engine error: {self.last_error}"
        if self.segmenter is None:
            return "Ready: the model is loaded when the effect is first used."
        stats = self.segmenter.stats
        _, threads = self._key
        return (f"Model {self.segmenter.entry.name} loaded ({threads or 'auto'} threads); "
                f"{stats.encoder_runs} slices encoded, {stats.cache_hits} from cache, "
                f"{stats.boxes_decoded} boxes decoded.")
