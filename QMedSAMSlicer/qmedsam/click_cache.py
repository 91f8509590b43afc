"""Masks after the first clicks of a box, so that a new click costs one decoder call (issue 17).

A click's result depends only on the slice, the box and the clicks before it (qmedsam.click_rule applies them
one at a time), and the Slicer effect sends a box's whole click list every time. Keeping the mask after each
prefix lets the engine start from the longest prefix it has already computed instead of replaying every click
from the box-only mask. The result is the same bytes either way: only decoder calls are skipped.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


class ClickPrefixCache:
    """Full-size bool masks keyed by (slice, box, first n clicks), least recently used evicted beyond `max_mb`."""

    def __init__(self, max_mb: float):
        self.capacity_bytes = max(0, int(max_mb * 2**20))
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(slice_key: bytes, box_256: np.ndarray, clicks: np.ndarray) -> bytes:
        """`clicks`: the (n, 3) prefix, n >= 0 (n = 0: the box-only mask)."""
        digest = hashlib.blake2b(slice_key, digest_size=16)
        digest.update(np.ascontiguousarray(box_256, np.float64).tobytes())
        digest.update(np.ascontiguousarray(clicks, np.float64).reshape(-1, 3).tobytes())
        return digest.digest()

    def longest_prefix(self, slice_key: bytes, box_256: np.ndarray,
                       clicks: np.ndarray) -> tuple[int, np.ndarray | None]:
        """(n, mask after the first n clicks) for the largest cached n, or (0, None) when nothing is cached."""
        for count in range(len(clicks), -1, -1):
            key = self.key(slice_key, box_256, clicks[:count])
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return count, found
        return 0, None

    def put(self, slice_key: bytes, box_256: np.ndarray, clicks: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Keep `mask` (the result after `clicks`) read-only, so no caller can change a cached result; returns it."""
        mask = np.array(mask, dtype=bool, copy=True)
        mask.setflags(write=False)
        if mask.nbytes > self.capacity_bytes:
            return mask
        key = self.key(slice_key, box_256, clicks)
        if key in self._entries:
            self._bytes -= self._entries.pop(key).nbytes
        self._entries[key] = mask
        self._bytes += mask.nbytes
        while self._bytes > self.capacity_bytes:
            self._bytes -= self._entries.popitem(last=False)[1].nbytes
        return mask

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["ClickPrefixCache"]
