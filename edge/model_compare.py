"""Compare two versions of a model on the same labelled files: what promoting one would change.

A technician trains a candidate without promoting it, then lets both versions judge the same good
and defect parts (ones neither was trained on): false rejects, misses per defect type, AUROC, and
the files on which the two disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.site_calibration import JudgedFiles, error_rates
from vision.anomaly.calibration import auroc


def version_summary(judged: JudgedFiles, active: bool) -> dict[str, Any]:
    good, defects = judged.good.scores, judged.defect_scores()
    return {
        "version": judged.version, "active": active, "threshold": judged.threshold,
        **error_rates(good, defects, judged.threshold),
        "miss_rate_by_label": {label: error_rates([], s.scores, judged.threshold)["miss_rate"]
                               for label, s in judged.defects.items()},
        "auroc": auroc(np.asarray(good), np.asarray(defects)) if good and defects else None,
        "judged_files": len(good) + len(defects), "skipped_files": len(judged.skipped()),
    }


def disagreements(first: JudgedFiles, second: JudgedFiles) -> list[dict[str, str]]:
    """The files both versions judged but decided differently, with the decision each one made."""
    theirs = second.decisions()
    return [{"path": path, "expected": expected, f"v{first.version}": mine, f"v{second.version}": theirs[path][1]}
            for path, (expected, mine) in first.decisions().items()
            if path in theirs and theirs[path][1] != mine]
