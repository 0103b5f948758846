"""Transport-independent state of the smart-camera handshake with the line controller.

Parts are tracked by 16-bit SEQUENCE COUNTERS, not bare levels, so they can be pipelined:

* the PLC increments a trigger counter once per part (serial, lot and recipe latched with it);
* the appliance publishes each result with its trigger's sequence into a FIFO of unacknowledged
  results (oldest first) and increments a result counter;
* the PLC acknowledges by sending the sequence of the last result it consumed, which releases
  that result and every older one.

The classic level bits (Ready, Busy, ResultValid, OK, NG, Error, Ack) are derived from the same
state, so a PLC that only uses levels sees the oldest unacknowledged result and clears it with a
rising edge of Ack.  Transports (Modbus, serial) own one `HandshakeState` each; it is thread-safe.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

log = logging.getLogger(__name__)

LineAnswer = Literal["OK", "NG", "INVALID", "FAILSAFE"]  # what goes to the reject gate: a decision, or the fail-safe
StackLight = Literal["off", "green", "amber", "red"]
StackLightSetting = Literal["off", "green", "amber", "red", "auto"]  # auto: red on error/stop/link down, etc.

SEQ_MODULO = 1 << 16
DECISION_CODES: dict[str, int] = {"OK": 1, "NG": 2, "INVALID": 3, "FAILSAFE": 4}
CODE_DECISIONS: dict[int, LineAnswer] = {1: "OK", 2: "NG", 3: "INVALID", 4: "FAILSAFE"}
STACK_LIGHT_CODES: dict[str, int] = {"off": 0, "green": 1, "amber": 2, "red": 3}
CODE_STACK_LIGHTS: dict[int, StackLight] = {0: "off", 1: "green", 2: "amber", 3: "red"}

# Status word bits (the same word goes out over Modbus and serial).
ST_READY = 1 << 0
ST_BUSY = 1 << 1
ST_RESULT_VALID = 1 << 2
ST_OK = 1 << 3
ST_NG = 1 << 4
ST_ERROR = 1 << 5
ST_ACK_ECHO = 1 << 6
ST_STOP_LINE = 1 << 7
ST_LINK_DOWN = 1 << 8

# Error codes the bridge raises itself; the service uses its own codes (keep them below 0x100).
ERR_NONE = 0
ERR_LINK_DOWN = 0x101
ERR_LOST_TRIGGER = 0x102

MAX_TRACKED_TRIGGERS = 4096  # open triggers kept for result matching; the oldest are dropped beyond this


def seq_delta(new: int, old: int) -> int:
    """Signed distance new - old on a 16-bit wrapping counter (-32768..32767)."""
    return ((new - old + SEQ_MODULO // 2) % SEQ_MODULO) - SEQ_MODULO // 2


def seq_next(seq: int) -> int:
    return (seq + 1) % SEQ_MODULO


@dataclass(frozen=True)
class Trigger:
    """One part announced by the line controller."""

    seq: int
    serial: str
    lot: str
    recipe: int
    received_at_monotonic: float


@dataclass(frozen=True)
class Result:
    """The verdict for one trigger. `late` marks a FAILSAFE sent because the verdict missed its deadline."""

    seq: int
    decision: LineAnswer
    late: bool = False

    def __post_init__(self) -> None:
        if self.decision not in DECISION_CODES:
            raise ValueError(f"decision must be one of {sorted(DECISION_CODES)}, got {self.decision!r}")
        if not 0 <= self.seq < SEQ_MODULO:
            raise ValueError(f"seq must be 0..65535, got {self.seq}")

    @property
    def code(self) -> int:
        """Wire code: low byte decision (1 OK, 2 NG, 3 INVALID, 4 FAILSAFE), bit 8 late."""
        return DECISION_CODES[self.decision] | (0x100 if self.late else 0)

    @staticmethod
    def from_code(seq: int, code: int) -> Result:
        decision = CODE_DECISIONS.get(code & 0xFF)
        if decision is None:
            raise ValueError(f"unknown decision code {code & 0xFF}")
        return Result(seq, decision, bool(code & 0x100))


@dataclass(frozen=True)
class Alarm:
    """Something a person should see: `kind` is a stable key, `message` says what happened."""

    kind: str
    message: str


TriggerHandler = Callable[[Trigger], None]
RecipeHandler = Callable[[int], None]
AlarmHandler = Callable[[Alarm], None]


class LineBridge(Protocol):
    """What the service sees of the line controller link. All methods are callable from any thread."""

    def start(
        self, on_trigger: TriggerHandler, on_recipe: RecipeHandler, on_alarm: AlarmHandler | None = None
    ) -> None: ...

    def publish(self, result: Result) -> None: ...

    def set_status(
        self,
        *,
        ready: bool | None = None,
        busy: bool | None = None,
        error: int | None = None,
        stack_light: StackLightSetting | None = None,
        stop_line: bool | None = None,
    ) -> None: ...

    def stats(self) -> dict[str, int]: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class OutputImage:
    """A consistent snapshot of everything the appliance shows the PLC."""

    status: int
    error_code: int
    heartbeat: int
    stack_light: int
    last_trigger_seq: int
    result_count: int
    pending: int
    lost_triggers: int
    active_recipe: int
    ring: tuple[tuple[int, int], ...]  # (seq, code) of the oldest unacknowledged results


@dataclass
class _Counters:
    triggers: int = 0
    duplicate_triggers: int = 0
    lost_triggers: int = 0
    counter_resets: int = 0
    results: int = 0
    rejected_results: int = 0
    acks: int = 0
    duplicate_acks: int = 0
    bad_acks: int = 0
    recipe_changes: int = 0
    error_resets: int = 0


@dataclass
class _Status:
    ready: bool = True
    busy: bool = False
    error: int = ERR_NONE
    stack_light: StackLight | None = None  # None: derived from error / ready / stop_line
    stop_line: bool = False
    link_down: bool = False


class HandshakeState:
    """Sequence-counter handshake: trigger dedup and gap detection, result FIFO, acks, level bits."""

    def __init__(self, ring_size: int = 8) -> None:
        self.ring_size = ring_size
        self._lock = threading.Lock()
        self._last_trigger_seq: int | None = None
        self._open: dict[int, Trigger] = {}  # triggered, no result yet (insertion ordered)
        self._answered: deque[int] = deque(maxlen=MAX_TRACKED_TRIGGERS)  # recent seqs with a result
        self._answered_set: set[int] = set()
        self._pending: deque[Result] = deque()  # published, not yet acknowledged, oldest first
        self._last_acked: int | None = None
        self._result_count = 0
        self._recipe = 0
        self._heartbeat = 0
        self._trigger_level = False
        self._ack_level = False
        self._status = _Status()
        self._counters = _Counters()

    # ----- PLC inputs -------------------------------------------------------------------------

    def accept_trigger(self, seq: int, serial: str, lot: str, recipe: int, now: float | None = None) -> Trigger | None:
        """Register a trigger counter value. Returns the new Trigger, or None for a duplicate.

        The same sequence again (or one still waiting for its result) is a duplicate: counted, ignored.
        A jump forward by more than one counts the skipped sequences as lost triggers. A jump
        backwards means the PLC restarted its counter (the links below already drop replays): the
        trigger is accepted and counted in `counter_resets`.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._last_trigger_seq
            if last is not None:
                delta = seq_delta(seq, last)
                if delta == 0 or seq in self._open:
                    self._counters.duplicate_triggers += 1
                    return None
                if delta < 0:
                    self._counters.counter_resets += 1
                    log.warning("trigger sequence went back %d -> %d: PLC counter restarted", last, seq)
                elif delta > 1:
                    self._counters.lost_triggers += delta - 1
                    log.warning("trigger sequence jumped %d -> %d: %d trigger(s) lost", last, seq, delta - 1)
            trigger = Trigger(seq, serial, lot, recipe, now)
            self._last_trigger_seq = seq
            self._open[seq] = trigger
            while len(self._open) > MAX_TRACKED_TRIGGERS:
                self._open.pop(next(iter(self._open)))
            self._counters.triggers += 1
            return trigger

    def set_trigger_baseline(self, seq: int) -> None:
        """Adopt the peer's current trigger counter without treating it as a part (first contact)."""
        with self._lock:
            self._last_trigger_seq = seq

    def trigger_level(
        self, level: bool, serial: str, lot: str, recipe: int, now: float | None = None
    ) -> Trigger | None:
        """Level-only PLCs: a rising edge of Trigger counts as the next trigger sequence."""
        with self._lock:
            rising = level and not self._trigger_level
            self._trigger_level = level
            seq = 1 if self._last_trigger_seq is None else seq_next(self._last_trigger_seq)
        return self.accept_trigger(seq, serial, lot, recipe, now) if rising else None

    def ack(self, seq: int) -> int | None:
        """The PLC consumed every result up to and including `seq`. Returns how many were released,
        0 for a repeated ack, None for an ack of a result that was never published (counted as bad)."""
        with self._lock:
            for index, result in enumerate(self._pending):
                if result.seq == seq:
                    for _ in range(index + 1):
                        self._pending.popleft()
                    self._last_acked = seq
                    self._counters.acks += index + 1
                    return index + 1
            if self._last_acked is not None and seq_delta(seq, self._last_acked) <= 0:
                self._counters.duplicate_acks += 1
                return 0
            if seq in self._answered_set and not any(r.seq == seq for r in self._pending):
                self._counters.duplicate_acks += 1
                return 0
            self._counters.bad_acks += 1
            return None

    def ack_is_valid(self, seq: int) -> bool:
        """Would `ack(seq)` be accepted (pending or already acknowledged)?"""
        with self._lock:
            if any(r.seq == seq for r in self._pending):
                return True
            return seq in self._answered_set

    def ack_level(self, level: bool) -> int:
        """Level-only PLCs: a rising edge of Ack releases the oldest result."""
        with self._lock:
            rising = level and not self._ack_level
            self._ack_level = level
            if not rising or not self._pending:
                return 0
            head = self._pending[0].seq
        released = self.ack(head)
        return released or 0

    def set_recipe(self, recipe: int) -> bool:
        """Returns True when the recipe number changed."""
        with self._lock:
            if recipe == self._recipe:
                return False
            self._recipe = recipe
            self._counters.recipe_changes += 1
            return True

    def reset_error(self) -> None:
        with self._lock:
            self._status.error = ERR_NONE
            self._counters.error_resets += 1

    # ----- appliance side ---------------------------------------------------------------------

    def publish(self, result: Result) -> bool:
        """Queue a result for the PLC. Refused (False, counted) when its trigger is unknown or already answered."""
        with self._lock:
            if self._open.pop(result.seq, None) is None:
                self._counters.rejected_results += 1
                reason = "already answered" if result.seq in self._answered_set else "never triggered"
                log.warning("result for trigger %d refused: %s", result.seq, reason)
                return False
            if len(self._answered) == self._answered.maxlen:
                self._answered_set.discard(self._answered[0])
            self._answered.append(result.seq)
            self._answered_set.add(result.seq)
            self._pending.append(result)
            self._result_count = (self._result_count + 1) % SEQ_MODULO
            self._counters.results += 1
            return True

    def set_status(
        self,
        *,
        ready: bool | None = None,
        busy: bool | None = None,
        error: int | None = None,
        stack_light: StackLightSetting | None = None,
        stop_line: bool | None = None,
    ) -> None:
        if stack_light is not None and stack_light != "auto" and stack_light not in STACK_LIGHT_CODES:
            raise ValueError(f"stack_light must be 'auto' or one of {sorted(STACK_LIGHT_CODES)}, got {stack_light!r}")
        if error is not None and not 0 <= error < SEQ_MODULO:
            raise ValueError(f"error code must be 0..65535, got {error}")
        with self._lock:
            if ready is not None:
                self._status.ready = ready
            if busy is not None:
                self._status.busy = busy
            if error is not None:
                self._status.error = error
            if stack_light == "auto":
                self._status.stack_light = None
            elif stack_light is not None:
                self._status.stack_light = stack_light
            if stop_line is not None:
                self._status.stop_line = stop_line

    def set_link_down(self, down: bool) -> None:
        with self._lock:
            self._status.link_down = down

    def beat(self) -> int:
        with self._lock:
            self._heartbeat = (self._heartbeat + 1) % SEQ_MODULO
            return self._heartbeat

    # ----- views ------------------------------------------------------------------------------

    def _stack_light(self) -> StackLight:
        status = self._status
        if status.stack_light is not None:
            return status.stack_light
        if status.error or status.stop_line or status.link_down:
            return "red"
        if not status.ready:
            return "amber"
        return "green"

    def output(self) -> OutputImage:
        with self._lock:
            status = self._status
            error_code = status.error or (ERR_LINK_DOWN if status.link_down else ERR_NONE)
            word = 0
            if status.ready and not error_code and not status.stop_line:
                word |= ST_READY
            if status.busy or self._open:
                word |= ST_BUSY
            if self._pending:
                word |= ST_RESULT_VALID
                head = self._pending[0].decision
                word |= ST_OK if head == "OK" else ST_NG  # INVALID and FAILSAFE reject: NG
            if error_code:
                word |= ST_ERROR
            if self._ack_level:
                word |= ST_ACK_ECHO
            if status.stop_line:
                word |= ST_STOP_LINE
            if status.link_down:
                word |= ST_LINK_DOWN
            ring = tuple((r.seq, r.code) for r in list(self._pending)[: self.ring_size])
            return OutputImage(
                status=word,
                error_code=error_code,
                heartbeat=self._heartbeat,
                stack_light=STACK_LIGHT_CODES[self._stack_light()],
                last_trigger_seq=self._last_trigger_seq or 0,
                result_count=self._result_count,
                pending=len(self._pending),
                lost_triggers=self._counters.lost_triggers % SEQ_MODULO,
                active_recipe=self._recipe,
                ring=ring,
            )

    @property
    def last_trigger_seq(self) -> int | None:
        with self._lock:
            return self._last_trigger_seq

    def stats(self) -> dict[str, int]:
        with self._lock:
            counters = dict(vars(self._counters))
            counters["pending_results"] = len(self._pending)
            counters["open_triggers"] = len(self._open)
            return counters


@dataclass
class CallbackDispatcher:
    """Runs the service's callbacks in order on one thread of their own, so a slow callback never
    stalls the protocol thread (Modbus server loop, serial reader)."""

    name: str = "line-callbacks"
    _queue: queue.SimpleQueue[Callable[[], None] | None] = field(default_factory=queue.SimpleQueue)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], None]) -> None:
        self._queue.put(call)

    def stop(self, timeout_s: float = 2.0) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            try:
                call()
            except Exception:
                log.exception("line bridge callback failed")
