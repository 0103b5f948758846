"""What goes into the store: plain records, independent of HTTP and of the models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["OK", "NG", "INVALID"]
DECISIONS: tuple[Decision, ...] = ("OK", "NG", "INVALID")


@dataclass(frozen=True)
class PartContext:
    """Where a judged part comes from: its identity and traceability fields."""

    station: str
    source: str
    serial: str | None = None
    lot: str | None = None
    trigger_seq: int | None = None


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
    actuated: str | None = None  # the decision sent to the line (e.g. FAILSAFE when late)
    late: bool = False


@dataclass(frozen=True)
class StoredVerdict:
    """What the store acknowledges once a verdict is durable."""

    verdict_id: int
    part_id: int
    serial: str
    batch_id: int | None
    created_at: str
