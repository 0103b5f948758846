"""SQLite verdict store: schema migrations, one group-committing writer, thread-local readers."""

from edge.store.records import DECISIONS, Decision, NewVerdict, PartContext, StoredVerdict
from edge.store.store import StoreError, VerdictStore
from edge.store.writer import StoreUnavailableError

__all__ = ["DECISIONS", "Decision", "NewVerdict", "PartContext", "StoreError", "StoreUnavailableError",
           "StoredVerdict", "VerdictStore"]
