"""Labelled samples: the parts a person has judged (overrides and confirmations) and the parts the
near-threshold sampler kept, with their images. One table (``samples``, migration 7) is the source of
truth; rows are written by a store listener inside the record's own transaction."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from edge.store import ConflictError, NotFoundError, RecordEvent, StoreError
from edge.store.chain import append_audit, utc_now
from edge.store.records import SYSTEM_ACTOR
from edge.store.store import valid_id

GOOD = "good"
LABEL_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"  # a label becomes a defect class (a folder name) at retraining
Origin = Literal["override", "sampler"]
SampleState = Literal["unlabelled", "labelled", "excluded"]


class SampleError(StoreError):
    """A label or state change refused; nothing was changed."""


@dataclass(frozen=True)
class Sample:
    id: int
    verdict_id: int
    origin: str
    label: str | None
    excluded: bool
    image_ref: str | None
    score: float | None
    threshold: float | None
    model_name: str | None
    model_version: int | None
    created_at: str
    updated_at: str
    updated_by: str

    @property
    def state(self) -> SampleState:
        return "excluded" if self.excluded else "labelled" if self.label else "unlabelled"


def _sample(row: sqlite3.Row) -> Sample:
    return Sample(**{**dict(row), "excluded": bool(row["excluded"])})


def check_label(label: str) -> str:
    if not re.fullmatch(LABEL_PATTERN, label):
        raise SampleError(f"label {label!r}: use 1-64 letters, digits, '_', '.' or '-' ('good' for a good part)")
    return label


class NearThresholdSampler:
    """Chooses parts whose score lies within ``band`` (a fraction of the threshold) of it, at most
    ``per_hour`` an hour (a token bucket holding up to an hour's worth), and remembers the image each
    chosen part was given until its verdict is stored."""

    def __init__(self, band: float, per_hour: int) -> None:
        self.band = band
        self.per_hour = per_hour
        self._tokens = float(per_hour)
        self._last = time.monotonic()
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.band > 0 and self.per_hour > 0

    def near(self, score: float | None, threshold: float | None) -> bool:
        return (self.enabled and score is not None and threshold is not None
                and abs(score - threshold) <= self.band * abs(threshold))

    def choose(self, score: float | None, threshold: float | None) -> bool:
        """Whether to keep this part as a sample (takes one from the rate limit when it does)."""
        if not self.near(score, threshold):
            return False
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.per_hour), self._tokens + (now - self._last) * self.per_hour / 3600.0)
            self._last = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True

    def expect(self, image_ref: str | None) -> None:
        if image_ref is not None:
            with self._lock:
                if len(self._pending) > 10_000:  # verdicts that never got stored (a refused part)
                    self._pending.clear()
                self._pending.add(image_ref)

    def take(self, image_ref: str | None) -> bool:
        if image_ref is None or not self._pending:
            return False
        with self._lock:
            if image_ref in self._pending:
                self._pending.discard(image_ref)
                return True
        return False

    @property
    def waiting(self) -> bool:
        return bool(self._pending)


_INSERT = ("INSERT INTO samples (verdict_id, origin, label, excluded, image_ref, score, threshold, model_name,"
           " model_version, created_at, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class SampleRecorder:
    """The store listener: an override or confirmation labels its part's sample (creating it), a stored
    verdict the sampler chose becomes an unlabelled sample."""

    def __init__(self, sampler: NearThresholdSampler) -> None:
        self.sampler = sampler

    def __call__(self, conn: sqlite3.Connection, event: RecordEvent) -> None:
        if event.kind == "override":
            self._from_override(conn, event.ids[0])
        elif event.kind == "verdicts" and self.sampler.waiting:
            for verdict_id in event.ids:
                row = conn.execute("SELECT id, image_ref, score, threshold, model_name, model_version, created_at"
                                   " FROM verdicts WHERE id = ?", (verdict_id,)).fetchone()
                if row is not None and self.sampler.take(row["image_ref"]):
                    conn.execute(_INSERT, (row["id"], "sampler", None, 0, row["image_ref"], row["score"],
                                           row["threshold"], row["model_name"], row["model_version"],
                                           row["created_at"], row["created_at"], SYSTEM_ACTOR))

    def _from_override(self, conn: sqlite3.Connection, override_id: int) -> None:
        row = conn.execute(
            "SELECT o.verdict_id, o.decision AS o_decision, o.label AS o_label, o.operator, o.created_at AS at,"
            " v.modality, v.label, v.image_ref, v.score, v.threshold, v.model_name, v.model_version"
            " FROM overrides o JOIN verdicts v ON v.id = o.verdict_id WHERE o.id = ?", (override_id,)).fetchone()
        if row is None or row["modality"] != "vision":
            return
        label, excluded = _override_label(row["o_decision"], row["o_label"], row["label"])
        conn.execute(_INSERT + " ON CONFLICT(verdict_id) DO UPDATE SET origin = 'override', label = excluded.label,"
                     " excluded = excluded.excluded, updated_at = excluded.updated_at,"
                     " updated_by = excluded.updated_by",
                     (row["verdict_id"], "override", label, int(excluded), row["image_ref"], row["score"],
                      row["threshold"], row["model_name"], row["model_version"], row["at"], row["at"],
                      row["operator"]))


def _override_label(decision: str, given: str | None, model_label: str | None) -> tuple[str | None, bool]:
    """The sample label a person's decision gives: OK is good; NG the label given, else the model's
    defect label, else 'defect'; INVALID (unfit to judge) is kept out of training."""
    if decision == "OK":
        return GOOD, False
    if decision == "INVALID":
        return None, True
    for candidate in (given, model_label):
        if candidate and candidate != GOOD and re.fullmatch(LABEL_PATTERN, candidate):
            return candidate, False
    return "defect", False


def list_samples(conn: sqlite3.Connection, label: str | None = None, state: SampleState | None = None,
                 before: int | None = None, limit: int = 50) -> list[Sample]:
    """Samples newest first; ``before``: a sample id to page from (exclusive)."""
    where: list[str] = []
    params: list[Any] = []
    if label is not None:
        where.append("label = ?")
        params.append(label)
    if state == "excluded":
        where.append("excluded = 1")
    elif state == "labelled":
        where.append("excluded = 0 AND label IS NOT NULL")
    elif state == "unlabelled":
        where.append("excluded = 0 AND label IS NULL")
    if before is not None:
        where.append("id < ?")
        params.append(before)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(f"SELECT * FROM samples {clause} ORDER BY id DESC LIMIT ?", (*params, limit))
    return [_sample(row) for row in rows]


def sample_counts(conn: sqlite3.Connection) -> dict[str, Any]:
    """The totals by state, and the usable samples (labelled, not excluded, with an image) per label."""
    row = conn.execute("SELECT COUNT(*), COALESCE(SUM(excluded), 0), COALESCE(SUM(excluded = 0 AND label IS NULL), 0),"
                       " COALESCE(SUM(image_ref IS NULL), 0) FROM samples").fetchone()
    usable = {str(r[0]): int(r[1]) for r in conn.execute(
        "SELECT label, COUNT(*) FROM samples WHERE excluded = 0 AND label IS NOT NULL AND image_ref IS NOT NULL"
        " GROUP BY label ORDER BY label")}
    return {"total": int(row[0]), "excluded": int(row[1]), "unlabelled": int(row[2]), "without_image": int(row[3]),
            "usable": usable}


def get_sample(conn: sqlite3.Connection, sample_id: int) -> Sample:
    row = conn.execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone() if valid_id(sample_id) else None
    if row is None:
        raise NotFoundError(f"sample {sample_id} does not exist")
    return _sample(row)


def change_sample(conn: sqlite3.Connection, sample_id: int, actor: str, label: str | None = None,
                  excluded: bool | None = None, reason: str | None = None) -> Sample:
    """Label, relabel, exclude or include a sample, audited with before and after (in the caller's transaction)."""
    if label is None and excluded is None:
        raise SampleError("give a label, or excluded true/false")
    before = get_sample(conn, sample_id)
    if label is not None:
        check_label(label)
        if before.image_ref is None:
            raise ConflictError(f"sample {sample_id} has no kept image: it cannot be used for training, only excluded")
    new_label = before.label if label is None else label
    new_excluded = before.excluded if excluded is None else excluded
    if (new_label, new_excluded) == (before.label, before.excluded):
        return before
    conn.execute("UPDATE samples SET label = ?, excluded = ?, updated_at = ?, updated_by = ? WHERE id = ?",
                 (new_label, int(new_excluded), utc_now(), actor, sample_id))
    action = "sample_labelled" if label is not None and label != before.label else (
        "sample_excluded" if new_excluded else "sample_included")
    append_audit(conn, actor, action, "sample", sample_id,
                 {"label": before.label, "excluded": before.excluded},
                 {"label": new_label, "excluded": new_excluded},
                 {"verdict_id": before.verdict_id, **({"reason": reason} if reason else {})})
    return get_sample(conn, sample_id)
