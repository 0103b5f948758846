"""Batch figures, SPC and batch reports for the plant's QMS (issue 20).

The station page, the QMS routes and upstream messages read the same functions: ``batch_summary``,
``window_summary``, ``current_summary`` (figures; ``summary_record`` gives them as one JSON object),
``batch_charts`` (control charts) and ``edge.quality.drift.model_drift`` (scores against the model's
calibration). ``attach_quality`` registers the store listener that keeps the figures current and starts
the after-commit worker (drift alarms, batch reports)."""

from edge.quality.charts import BatchCharts, RateChart, ScoreChart, batch_charts
from edge.quality.service import QualityService, attach_quality
from edge.quality.summary import (
    Figures,
    Summary,
    batch_summary,
    current_summary,
    summary_record,
    window_summary,
)
from edge.quality.tracker import BatchFigures

__all__ = ["BatchCharts", "BatchFigures", "Figures", "QualityService", "RateChart", "ScoreChart", "Summary",
           "attach_quality", "batch_charts", "batch_summary", "current_summary", "summary_record", "window_summary"]
