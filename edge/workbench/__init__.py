"""The maintenance workbench: samples worth a person's look, retraining from them, comparing the candidate
with the running model, its threshold, promotion, and the camera set-up (routes: edge.api.workbench).

- ``samples``: every override or confirmation of a vision verdict labels its part's sample (a store
  listener, in the override's transaction); the near-threshold sampler keeps parts scoring within
  ``workbench.sample_band`` of the threshold, with their image, at most ``samples_per_hour``.
- ``jobs``: one retraining job at a time, in edge.training's low-priority process; the candidate is
  registered, never promoted; a job a restart cut off is marked interrupted.
- ``compare``: both versions judge the job's held-back samples (edge.model_compare figures, histograms,
  threshold curves).
- ``models``: promote, roll back, set a threshold (a new version, as `models calibrate`), audited, swapped
  in without a restart.
- ``camera``: preview, exposure and gain, sharpness and the quality gate on the line camera.
"""

from edge.workbench.service import Workbench

__all__ = ["Workbench"]
