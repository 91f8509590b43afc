"""Encode the slice under the mouse in the background, so that releasing a box only costs the decoder.

OpenVINO runs the encoder on its own threads (InferRequest.start_async); nothing here blocks except
`finish`. The caller (the effect) calls `request` when the mouse reaches a new slice, `poll` from a Qt
timer, and `finish` right before segmenting. Results go into the Segmenter's content-keyed embedding
cache under the keys both engine calls will look up: segment_2d keys the (H, W, 3) image it validates
to, segment_3d keys each (H, W) slice, and both have the same embedding.

Latest wins: a new slice cancels the one in flight, because the user has moved on and a stale encode
would delay the one that matters by up to a whole encoder run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qmedsam.engine import EmbeddingCache
from qmedsam.preprocess import to_model_input


def cache_keys(image: np.ndarray) -> list:
    """The cache keys under which segment_2d and segment_3d will look for this grey (H, W) slice."""
    keys = [EmbeddingCache.key(image)]
    if image.ndim == 2:
        keys.append(EmbeddingCache.key(np.repeat(image[:, :, None], 3, axis=2)))
    return keys


@dataclass
class _InFlight:
    keys: list
    request: object  # openvino.InferRequest


class BackgroundEncoder:
    def __init__(self, segmenter):
        self.segmenter = segmenter
        self._in_flight: _InFlight | None = None
        self.started = 0
        self.completed = 0
        self.cancelled = 0

    def is_cached(self, image: np.ndarray) -> bool:
        return self.segmenter.cache.get(cache_keys(image)[0]) is not None

    def request(self, image: np.ndarray) -> bool:
        """Start encoding this slice unless it is cached or already in flight; True when started."""
        image = np.ascontiguousarray(image)
        keys = cache_keys(image)
        if self._in_flight is not None and self._in_flight.keys[0] == keys[0]:
            return False
        if self.segmenter.cache.get(keys[0]) is not None:
            return False
        self.cancel()
        self._in_flight = _InFlight(keys, self.segmenter.runtime.start_encode(to_model_input(image)[0]))
        self.started += 1
        return True

    def poll(self) -> bool:
        """Store a finished encode in the cache (call from a timer); True while one is still running."""
        if self._in_flight is None:
            return False
        if not self._in_flight.request.wait_for(0):
            return True
        self._store()
        return False

    def finish(self, image: np.ndarray) -> None:
        """If this slice is being encoded, wait for it and cache it (the engine call that follows is a hit)."""
        if self._in_flight is None:
            return
        if self._in_flight.keys[0] == EmbeddingCache.key(np.ascontiguousarray(image)):
            self._in_flight.request.wait()
            self._store()

    def cancel(self) -> None:
        if self._in_flight is not None:
            self._in_flight.request.cancel()
            try:
                self._in_flight.request.wait()
            except RuntimeError:  # a cancelled request reports it when waited on
                pass
            self._in_flight = None
            self.cancelled += 1

    def _store(self) -> None:
        embedding = np.array(self._in_flight.request.get_output_tensor(0).data, copy=True)
        for key in self._in_flight.keys:
            self.segmenter.cache.put(key, embedding)
        self._in_flight = None
        self.completed += 1
