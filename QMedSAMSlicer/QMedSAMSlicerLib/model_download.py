"""A model download the module panel can follow and cancel: qmedsam.model_store.fetch in a worker thread.

Slicer-free. The panel starts it only after the user agreed, polls `fraction` and `finished` from a Qt timer
on the main thread, and calls `cancel()` from its Cancel button; a cancelled or failed download keeps
nothing (model_store stages and verifies every file before it installs the model).
"""

from __future__ import annotations

import threading

from qmedsam import model_store
from qmedsam.errors import QMedSAMError


class BackgroundFetch:
    def __init__(self, entry, base_url: str | None = None):
        self.entry, self.base_url = entry, base_url
        self.done, self.total = 0, entry.total_bytes
        self.folder = None  # where the model was installed, once finished without error
        self.error = ""  # one line for the user; empty when it worked or was cancelled
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"QMedSAM download {entry.name}", daemon=True)

    def start(self) -> BackgroundFetch:
        self._thread.start()
        return self

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def _run(self) -> None:
        try:
            self.folder = model_store.fetch(self.entry, self.base_url, progress=self._progress,
                                            cancel=self._cancel.is_set)
        except model_store.Cancelled:
            pass
        except QMedSAMError as error:
            self.error = str(error)
        except Exception as error:  # anything unforeseen still ends the download with a message, not a hang
            self.error = f"Download of {self.entry.name} failed: {error}"

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
