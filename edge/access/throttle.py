"""Failed-login throttling, in memory, per client address and per user name.

An attempt counts as a failure until it succeeds, so a burst of parallel guesses is throttled too.
After ``max_failures`` the key is locked for ``base_s``, doubling with every further failure up to
``max_s``; while locked, attempts are refused before any password hashing runs. A success resets
the user's and the address's count; a key forgotten after ``max_s`` without failures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge.access.errors import Throttled

MAX_KEYS = 10_000  # bounded memory under a flood of distinct names or addresses


@dataclass
class _Entry:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    def __init__(self, max_failures: int = 5, base_s: float = 1.0, max_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.base_s = base_s
        self.max_s = max_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def begin(self, keys: Iterable[str]) -> list[str]:
        """Start an attempt: raise Throttled while any key is locked, else count it as a failure.
        Returns the keys this attempt has just locked (for one audit record per lockout)."""
        now = self._clock()
        keys = list(keys)
        with self._lock:
            waits = [e.locked_until - now for k in keys if (e := self._entries.get(k)) and e.locked_until > now]
            if waits:
                raise Throttled(max(waits))
            locked = []
            for key in keys:
                entry = self._entry(key, now)
                entry.failures += 1
                entry.last_failure = now
                if entry.failures >= self.max_failures:
                    extra = entry.failures - self.max_failures
                    entry.locked_until = now + min(self.max_s, self.base_s * 2 ** min(extra, 32))
                    if extra == 0:
                        locked.append(key)
            return locked

    def succeeded(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def retry_after(self, key: str) -> float:
        """Seconds ``key`` is still locked (0 when it is not)."""
        with self._lock:
            entry = self._entries.get(key)
            return max(0.0, entry.locked_until - self._clock()) if entry else 0.0

    def _entry(self, key: str, now: float) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last_failure > self.max_s and entry.locked_until <= now:
            entry = None  # quiet long enough: start over
        if entry is None:
            if len(self._entries) >= MAX_KEYS:
                self._forget(now)
            entry = self._entries[key] = _Entry()
        return entry

    def _forget(self, now: float) -> None:
        """Drop keys no longer locked, and if still full the oldest half (locked addresses stay longest)."""
        for key in [k for k, e in self._entries.items() if e.locked_until <= now]:
            del self._entries[key]
        if len(self._entries) >= MAX_KEYS:
            oldest = sorted(self._entries, key=lambda k: self._entries[k].last_failure)[: MAX_KEYS // 2]
            for key in oldest:
                del self._entries[key]
