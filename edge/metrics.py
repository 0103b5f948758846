"""Prometheus metrics for one station (a registry per app, so tests can build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)


class StationMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
