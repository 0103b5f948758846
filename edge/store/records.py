"""What goes into the store and what comes out of it: typed records, independent of HTTP and models."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from models.decision import DECISIONS, Decision

__all__ = ["DECISIONS", "Alarm", "AuditEntry", "Batch", "Decision", "NewVerdict", "Override", "PartContext",
           "RecordEvent", "RecordListener", "StoredVerdict", "Verdict", "from_row"]

SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class PartContext:
    """Where a judged part comes from: its identity, traceability fields and who sent it."""

    station: str
    source: str
    serial: str | None = None
    lot: str | None = None
    trigger_seq: int | None = None
    actor: str = SYSTEM_ACTOR  # the authenticated identity that submitted the part


@dataclass(frozen=True)
class NewVerdict:
    """One modality's judgement of one part, before it is stored."""

    modality: str
    decision: Decision
    label: str
    score: float | None
    threshold: float | None
    model_name: str | None
    model_version: int | None
    latency_ms: float
    reason: str | None = None
    image_ref: str | None = None
    heatmap_ref: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    actuated: str | None = None  # the answer sent to the line (e.g. FAILSAFE when late)
    late: bool = False


@dataclass(frozen=True)
class StoredVerdict:
    """What the store acknowledges once a verdict is durable."""

    verdict_id: int
    part_id: int
    serial: str
    batch_id: int | None
    created_at: str
    verdict_ids: tuple[int, ...] = ()  # every verdict of the part stored together, in order
    lot: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A stored verdict with its part, batch, latest override and late answer."""

    id: int
    part_id: int
    serial: str
    batch_id: int | None
    lot: str | None
    product: str | None
    station: str
    source: str | None
    modality: str
    model_name: str | None
    model_version: int | None
    label: str | None
    score: float | None
    threshold: float | None
    decision: Decision
    reason: str | None
    latency_ms: float | None
    image_ref: str | None
    heatmap_ref: str | None
    created_at: str
    details: dict[str, Any] | None
    recipe: str | None
    actuated: str | None
    late: bool
    trigger_seq: int | None
    actor: str | None
    refers_to: int | None
    hash: str | None
    override_decision: Decision | None = None
    override_label: str | None = None
    override_operator: str | None = None
    override_reason: str | None = None
    override_at: str | None = None
    override_id: int | None = None

    @property
    def effective_decision(self) -> Decision:
        """The operator's decision where one overrode the model's, else the model's."""
        return self.override_decision or self.decision


@dataclass(frozen=True)
class Override:
    id: int
    verdict_id: int
    decision: Decision
    label: str | None
    operator: str
    reason: str | None
    created_at: str
    audit_id: int | None = None


@dataclass(frozen=True)
class Batch:
    id: int
    lot: str
    product: str | None
    recipe: str | None
    operator: str | None
    station: str
    opened_at: str
    closed_at: str | None
    closed_by: str | None
    note: str | None


@dataclass(frozen=True)
class Alarm:
    id: int
    kind: str
    severity: str
    message: str
    source: str | None
    raised_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    cleared_at: str | None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    entity: str | None
    entity_id: str | None
    details: dict[str, Any] | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    prev_hash: str | None
    hash: str | None


RecordKind = Literal["verdicts", "override", "late_answer", "batch", "alarm"]


@dataclass(frozen=True)
class RecordEvent:
    """A change the store has just made, told to its listeners inside the same transaction, so what they
    derive from it (running batch figures, an outbox for the plant's QMS) commits with it or not at all.

    ``ids``: the verdict ids of one part (in order), or the override, batch or alarm id. ``action``:
    stored; overridden or confirmed; late; opened or closed; raised, acknowledged or cleared."""

    kind: RecordKind
    action: str
    ids: tuple[int, ...]
    audit_id: int | None = None


# Called with the writer's connection inside the open transaction; raising rolls the change back.
RecordListener = Callable[[sqlite3.Connection, RecordEvent], None]

R = TypeVar("R")
_JSON_COLUMNS = {"details", "before", "after"}


def from_row(record_type: type[R], row: sqlite3.Row) -> R:
    """A typed record from a row holding (at least) its fields; JSON columns decoded, flags as bool."""
    keys = set(row.keys())
    values: dict[str, Any] = {}
    for name in _field_names(record_type):  # type: ignore[arg-type]  # classes are hashable
        if name not in keys:
            continue
        value = row[name]
        if name in _JSON_COLUMNS and isinstance(value, str):
            value = json.loads(value)
        elif name == "late":
            value = bool(value)
        values[name] = value
    return record_type(**values)


@functools.cache
def _field_names(record_type: type) -> tuple[str, ...]:
    return tuple(item.name for item in fields(record_type))
