"""Continuous monitoring: judge rolling windows, alarm after k anomalous windows in the last n."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from acoustic.inspector import AcousticInspector, AcousticResult
from acoustic.sources import AudioSource


class KOfNAlarm:
    """Raised while at least ``k`` of the last ``n`` judged windows were NG (INVALID ones are skipped)."""

    def __init__(self, k: int, n: int) -> None:
        if not 1 <= k <= n:
            raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
        self.k = k
        self.n = n
        self._recent: deque[bool] = deque(maxlen=n)

    def update(self, result: AcousticResult) -> bool:
        if result.decision != "INVALID":
            self._recent.append(result.decision == "NG")
        return self.active

    @property
    def active(self) -> bool:
        return sum(self._recent) >= self.k

    def reset(self) -> None:
        self._recent.clear()


@dataclass
class WindowVerdict:
    result: AcousticResult
    alarm: bool
    overruns: int
    lost_windows: int


def continuous(
    inspector: AcousticInspector,
    source: AudioSource,
    k: int = 3,
    n: int = 5,
    hop_s: float | None = None,
) -> Iterator[WindowVerdict]:
    """Judge the source's rolling windows of the model's length; yields one verdict per window."""
    alarm = KOfNAlarm(k, n)
    for clip in source.windows(inspector.window_s, hop_s):
        result = inspector.judge_clip(clip)
        yield WindowVerdict(result, alarm.update(result), source.overruns, source.lost_windows)
