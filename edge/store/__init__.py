"""SQLite verdict store: schema migrations, one group-committing writer, thread-local readers, hash chains."""

from edge.store.records import (
    DECISIONS,
    Alarm,
    AuditEntry,
    Batch,
    Decision,
    NewVerdict,
    Override,
    PartContext,
    RecordEvent,
    RecordListener,
    StoredVerdict,
    Verdict,
)
from edge.store.store import ConflictError, NotFoundError, StoreError, VerdictStore
from edge.store.writer import StoreUnavailableError

__all__ = ["DECISIONS", "Alarm", "AuditEntry", "Batch", "ConflictError", "Decision", "NewVerdict", "NotFoundError",
           "Override", "PartContext", "RecordEvent", "RecordListener", "StoreError", "StoreUnavailableError",
           "StoredVerdict", "Verdict", "VerdictStore"]
