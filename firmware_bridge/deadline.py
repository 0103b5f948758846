"""Reject timing: every trigger gets a result by its deadline, the fail-safe one if need be.

`DeadlineGuard` wraps any LineBridge.  At `deadline_s` after a trigger was received, if the service
has not published a result for it, the guard publishes `Result(seq, "FAILSAFE", late=True)`.  A
verdict published after that is not sent (the part has passed the gate): it is handed to `on_late`
so the service can record it as late, and counted.  Exactly one result per trigger reaches the PLC.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable

from .handshake import (
    AlarmHandler,
    LineAnswer,
    LineBridge,
    RecipeHandler,
    Result,
    StackLightSetting,
    Trigger,
    TriggerHandler,
)


class DeadlineGuard:
    """LineBridge decorator enforcing a trigger-to-result deadline."""

    def __init__(
        self,
        bridge: LineBridge,
        deadline_s: float,
        *,
        failsafe: LineAnswer = "FAILSAFE",
        on_late: Callable[[Result], None] | None = None,
    ) -> None:
        if deadline_s <= 0:
            raise ValueError(f"deadline_s must be positive, got {deadline_s}")
        self.bridge, self.deadline_s, self.failsafe, self.on_late = bridge, deadline_s, failsafe, on_late
        self._cond = threading.Condition()
        self._due: list[tuple[float, int]] = []  # heap of (deadline, seq)
        self._open: set[int] = set()
        self._expired: set[int] = set()
        self._counters: Counter[str] = Counter()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self, on_trigger: TriggerHandler, on_recipe: RecipeHandler, on_alarm: AlarmHandler | None = None) -> None:
        def guarded(trigger: Trigger) -> None:
            with self._cond:
                self._open.add(trigger.seq)
                heapq.heappush(self._due, (trigger.received_at_monotonic + self.deadline_s, trigger.seq))
                self._cond.notify()
            on_trigger(trigger)

        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="deadline-guard", daemon=True)
        self._thread.start()
        self.bridge.start(guarded, on_recipe, on_alarm)

    def publish(self, result: Result) -> None:
        with self._cond:
            if result.seq in self._expired:
                self._expired.discard(result.seq)
                self._counters["late_verdicts"] += 1
                late: Result | None = Result(result.seq, result.decision, late=True)
            else:
                self._open.discard(result.seq)
                late = None
        if late is None:
            self.bridge.publish(result)
        elif self.on_late is not None:
            self.on_late(late)

    def set_status(
        self,
        *,
        ready: bool | None = None,
        busy: bool | None = None,
        error: int | None = None,
        stack_light: StackLightSetting | None = None,
        stop_line: bool | None = None,
    ) -> None:
        self.bridge.set_status(ready=ready, busy=busy, error=error, stack_light=stack_light, stop_line=stop_line)

    def stats(self) -> dict[str, int]:
        merged = self.bridge.stats()
        with self._cond:
            merged.update(self._counters)
        return merged

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        self.bridge.stop()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._due or self._due[0][0] > time.monotonic()):
                    self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if self._stopping:
                    return
                _, seq = heapq.heappop(self._due)
                if seq not in self._open:
                    continue  # answered in time
                self._open.discard(seq)
                self._expired.add(seq)
                if len(self._expired) > 4096:  # bound the memory of verdicts that never came
                    self._expired.pop()
                self._counters["failsafe_results"] += 1
            self.bridge.publish(Result(seq, self.failsafe, late=True))
