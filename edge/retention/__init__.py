"""Storage that never fills: image retention by rule and budget, verdict rows archived by age, scheduled backups."""

from edge.retention.keeper import StorageKeeper
from edge.retention.overridden import KeepOverridden

__all__ = ["KeepOverridden", "StorageKeeper"]
