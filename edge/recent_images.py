"""The latest OK images, in memory only, bounded by bytes: what an operator's override or confirmation
keeps (written to disk then) and what the station page shows of the last parts. Each holds whatever the
inspection path already had (the upload's bytes or the camera frame's pixels): nothing is encoded or
written for a part that nobody looks at again. A restart empties it."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

Held = bytes | npt.NDArray[np.uint8]


def size_of(content: Held) -> int:
    """The memory an image keeps alive: a view of a larger frame (a crop) keeps the whole frame."""
    if isinstance(content, bytes):
        return len(content)
    base = content.base
    return int(base.nbytes) if isinstance(base, np.ndarray) else int(content.nbytes)


class RecentImages:
    """Images by reference (a verdict's ``image_ref``), the oldest dropped while over ``budget_bytes``."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self.dropped = 0  # images that left memory unkept
        self._items: OrderedDict[str, Held] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, ref: str, content: Held) -> bool:
        """Hold ``content``; False when one image alone is over the budget (not held)."""
        size = size_of(content)
        if size > self.budget_bytes:
            return False
        with self._lock:
            self._items[ref] = content
            self.bytes += size
            while self.bytes > self.budget_bytes:
                _, oldest = self._items.popitem(last=False)
                self.bytes -= size_of(oldest)
                self.dropped += 1
        return True

    def get(self, ref: str) -> Held | None:
        with self._lock:
            return self._items.get(ref)

    def pop(self, ref: str) -> Held | None:
        with self._lock:
            content = self._items.pop(ref, None)
            if content is not None:
                self.bytes -= size_of(content)
            return content

    def __len__(self) -> int:
        return len(self._items)
