"""The decision threshold of a defect classifier (NG when 1 - P(good labels) >= threshold), set on
images the classifier did not learn from (cross-validation or a validation split)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# The operating point of issue 3's targets: at most 2 % misses at at most 5 % false rejects.
MAX_MISS_RATE = 0.02  # at most this share of the held-out defects may pass as good ...
MAX_FALSE_REJECT = 0.05  # ... unless that would reject more than this share of the held-out good parts
RULE = f"max miss {MAX_MISS_RATE:.0%}, max false reject {MAX_FALSE_REJECT:.0%} (held-out images)"


def choose_threshold(defect_score: npt.NDArray[np.float64], is_defect: npt.NDArray[np.bool_]) -> float:
    """The largest threshold (at most 0.5) that lets at most MAX_MISS_RATE of the held-out defects pass,
    raised as far as needed (above 0.5 too) to reject at most MAX_FALSE_REJECT of the good parts.

    With many labels a classifier that is unsure spreads its probability: P(good) can be the largest
    and still below 0.5, so the false-reject bound must be able to lift the threshold past 0.5."""
    scores = np.sort(defect_score[is_defect])
    allowed = int(np.floor(MAX_MISS_RATE * len(scores)))
    threshold = float(min(0.5, scores[allowed])) if len(scores) else 0.5
    good_scores = defect_score[~is_defect]
    if len(good_scores):
        threshold = max(threshold, float(np.quantile(good_scores, 1.0 - MAX_FALSE_REJECT)))
    return float(min(max(threshold - 1e-6, 1e-6), 1.0))
