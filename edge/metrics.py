"""Prometheus metrics for one station (a registry per app, so tests can build several).

Hot-path figures (per-stage latency, verdict counts) are observed where they happen; figures that
other parts already keep (queue depths, counters of the line, the archive, the store) are copied into
gauges when /metrics is read (``sample``), so a part costs nothing extra for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

if TYPE_CHECKING:
    from edge.archive import ImageArchive
    from edge.line.pipeline import LinePipeline
    from edge.model_manager import ModelManager
    from edge.store import VerdictStore

_LATENCY_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)


class StationMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # resident memory, CPU seconds, open files, start time
        PlatformCollector(registry=r)  # python version
        self.http_refused = Counter("edge_http_refused", "Requests refused by a limit, by reason "
                                    "(too_large, rate_limited)", ["reason"], registry=r)
        self.line_queue = Gauge("edge_line_queue_depth", "Parts waiting in the line pipeline, per queue", ["queue"],
                                registry=r)
        self.line_events = Gauge("edge_line_events", "Line pipeline counts since start (triggers, results, "
                                 "failsafe, late, overload, camera_errors, invalid)", ["event"], registry=r)
        self.archive_events = Gauge("edge_archive_events", "Image archive counts since start (skipped_low_disk: "
                                    "images not kept for lack of space; failed_writes; ok_dropped: OK images that left "
                                    "memory unkept)", ["event"], registry=r)
        self.image_bytes = Gauge("edge_image_bytes", "Bytes of kept images and heat maps", registry=r)
        self.recent_ok_bytes = Gauge("edge_recent_ok_image_bytes", "Bytes of the recent OK images held in memory",
                                     registry=r)
        self.image_budget = Gauge("edge_image_budget_bytes", "Disk budget for images (0: none)", registry=r)
        self.data_free = Gauge("edge_data_free_bytes", "Free space on the data folder's filesystem", registry=r)
        self.requests = Counter("edge_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.verdicts = Counter("edge_verdicts", "Stored verdicts by modality, decision and model",
                                ["modality", "decision", "model"], registry=r)
        self.rejected_inputs = Counter("edge_rejected_inputs", "Inputs refused before judging, by reason",
                                       ["reason"], registry=r)
        self.verdict_latency = Histogram("edge_verdict_latency_seconds",
                                         "From receiving an input to its durable verdict",
                                         ["modality", "source"], buckets=_LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram("edge_stage_latency_seconds", "Time per pipeline stage",
                                       ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.store_queue = Gauge("edge_store_queue_depth", "Operations waiting for the SQLite writer", registry=r)
        self.store_commits = Gauge("edge_store_commits", "Commits made by the SQLite writer", registry=r)
        self.source_errors = Counter("edge_source_errors", "Frames a source could not deliver or judge",
                                     ["source", "reason"], registry=r)
        self.audio_overruns = Gauge("edge_audio_overruns", "Audio input overruns since start", ["microphone"],
                                    registry=r)
        self.audio_lost_windows = Gauge("edge_audio_lost_windows", "Audio windows lost since start", ["microphone"],
                                        registry=r)
        self.audio_abandoned_streams = Gauge(
            "edge_audio_abandoned_streams",
            "Audio streams given up because opening or closing them hung (a dead or hung sound server)",
            ["microphone"], registry=r)
        self.model_info = Gauge("edge_model_active_version", "Active version per loaded model", ["model"], registry=r)
        self.upstream_outbox_depth = Gauge("edge_upstream_outbox_depth",
                                           "Messages in the outbox not yet delivered, per destination", ["sink"],
                                           registry=r)
        self.upstream_published = Counter("edge_upstream_published",
                                          "Messages acknowledged by the destination (broker or webhook)", ["sink"],
                                          registry=r)
        self.upstream_failed = Counter("edge_upstream_failed",
                                       "Failed connection attempts and delivery rounds (their messages are retried)",
                                       ["sink", "stage"], registry=r)
        self.upstream_connected = Gauge("edge_upstream_connected", "1 while connected to the destination", ["sink"],
                                        registry=r)

    def sample(self, store: VerdictStore | None, models: ModelManager | None, line: LinePipeline | None,
               archive: ImageArchive | None) -> None:
        """Copy the figures other parts keep into their gauges (when /metrics is read)."""
        if store is not None:
            self.store_queue.set(store.writer.queue_depth)
            self.store_commits.set(store.writer.commits)
        for name, inspector in (models.loaded() if models else {}).items():
            self.model_info.labels(name).set(inspector.version)
        if line is not None:
            status = line.status()
            for queue_name, depth in status["queue"].items():
                self.line_queue.labels(queue_name).set(depth)
            for event, count in status["counters"].items():
                self.line_events.labels(event).set(count)
        if archive is not None:
            self.archive_events.labels("skipped_low_disk").set(archive.skipped_low_disk)
            self.archive_events.labels("failed_writes").set(archive.failed_writes)
            self.archive_events.labels("deleted").set(archive.removed_files)
            self.archive_events.labels("ok_dropped").set(archive.recent.dropped)
            self.recent_ok_bytes.set(archive.recent.bytes)
            self.image_bytes.set(archive.bytes_used)
            self.image_budget.set(archive.budget_bytes)
