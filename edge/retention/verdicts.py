"""Which verdict rows are due for archiving under a station's configuration, and archiving them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edge.config import StationConfig
from edge.store import VerdictStore
from edge.store.archiving import ArchiveRun, archive_verdicts, delivered_limit
from edge.store.queries import utc_text


def archive_due(config: StationConfig, days: float, store: VerdictStore | None = None) -> ArchiveRun:
    """Archive the verdicts older than ``days`` (and, with the QMS link configured, delivered upstream),
    through ``store`` (the running station's) or a store opened for the purpose."""
    own = store is None
    if store is None:
        store = VerdictStore(config.database_path, sync=config.storage.sync)
        store.start()
    try:
        older_than = utc_text(datetime.now(UTC) - timedelta(days=days))
        up_to = delivered_limit(store.reader()) if config.upstream.enabled else None
        return archive_verdicts(store, config.archive_dir, older_than, up_to, config.storage.archive_file_records)
    finally:
        if own:
            store.close()
